// Host app of the XCTest bundles: the tests run inside this process, so they get its
// entitlements (increased memory limit) and its Info.plist (local network usage). It shows no
// interface of its own.
#import <UIKit/UIKit.h>

@interface PBAppDelegate : UIResponder <UIApplicationDelegate>
@end

@implementation PBAppDelegate
- (BOOL)application:(UIApplication *)application didFinishLaunchingWithOptions:(NSDictionary *)launchOptions {
  return YES;
}
@end

int main(int argc, char *argv[]) {
  @autoreleasepool {
    return UIApplicationMain(argc, argv, nil, NSStringFromClass([PBAppDelegate class]));
  }
}
