// Declaration-only UIKit subset, as the host app and the bridge use it. Signatures from Apple's
// documentation (https://developer.apple.com/documentation/uikit), page by page as named below.
#pragma once

#import <Foundation/Foundation.h>

#include "../PBShim.h"

NS_ASSUME_NONNULL_BEGIN

// https://developer.apple.com/documentation/uikit/uiresponder
@interface UIResponder : NSObject
@end

// https://developer.apple.com/documentation/uikit/uiapplication
@interface UIApplication : UIResponder
@end

// https://developer.apple.com/documentation/uikit/uiapplicationdelegate
@protocol UIApplicationDelegate <NSObject>
@optional
// https://developer.apple.com/documentation/uikit/uiapplicationdelegate/application(_:didfinishlaunchingwithoptions:)
- (BOOL)application:(UIApplication *)application
    didFinishLaunchingWithOptions:(nullable NSDictionary *)launchOptions;
@end

// https://developer.apple.com/documentation/uikit/uiapplicationmain(_:_:_:_:)-1yub7
#ifdef __cplusplus
extern "C"
#endif
int UIApplicationMain(int argc, char *_Nullable argv[_Nonnull], NSString *_Nullable principalClassName,
                      NSString *_Nullable delegateClassName);

// https://developer.apple.com/documentation/uikit/uidevice
@interface UIDevice : NSObject
// https://developer.apple.com/documentation/uikit/uidevice/current
@property(class, nonatomic, readonly) UIDevice *currentDevice;
// https://developer.apple.com/documentation/uikit/uidevice/name (generic "iPhone" since iOS 16
// unless the app holds the user-assigned-device-name entitlement)
@property(nonatomic, readonly, strong) NSString *name;
// https://developer.apple.com/documentation/uikit/uidevice/model
@property(nonatomic, readonly, strong) NSString *model;
// https://developer.apple.com/documentation/uikit/uidevice/systemname
@property(nonatomic, readonly, strong) NSString *systemName;
// https://developer.apple.com/documentation/uikit/uidevice/systemversion
@property(nonatomic, readonly, strong) NSString *systemVersion;
@end

NS_ASSUME_NONNULL_END
