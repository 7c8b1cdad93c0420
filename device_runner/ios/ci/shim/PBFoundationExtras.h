// Foundation and Objective-C runtime API the bridge uses that Debian's GNUstep base 1.28 lacks
// or compiles out (it is built with GS_HAVE_NSURLSESSION 0). Force-included after GNUstep's
// Foundation by check_bridge.py. Signatures from Apple's documentation.
#pragma once

#import <Foundation/Foundation.h>
// Apple's Foundation brings libdispatch with it; GNUstep's does not.
#include <dispatch/dispatch.h>

#include "PBShim.h"

// Environment artefact, not an Apple API: GNUstep defines nil as ((id)0), which C++ will not
// convert to NSError ** or other non-object pointers; Apple's objc.h defines nil and Nil as
// nullptr in C++ (and C++ code written for Apple relies on it).
#if defined(__cplusplus)
#undef nil
#define nil nullptr
#undef Nil
#define Nil nullptr
#endif

NS_ASSUME_NONNULL_BEGIN

// https://developer.apple.com/documentation/objectivec/1418587-imp_implementationwithblock
#ifdef __cplusplus
extern "C"
#endif
IMP imp_implementationWithBlock(id block);

// https://developer.apple.com/documentation/foundation/processinfo/thermalstate-swift.enum
typedef NS_ENUM(NSInteger, NSProcessInfoThermalState) {
  NSProcessInfoThermalStateNominal,
  NSProcessInfoThermalStateFair,
  NSProcessInfoThermalStateSerious,
  NSProcessInfoThermalStateCritical,
};
@interface NSProcessInfo (PBThermalState)
// https://developer.apple.com/documentation/foundation/processinfo/thermalstate-swift.property (iOS 11)
@property(readonly) NSProcessInfoThermalState thermalState;
@end

// https://developer.apple.com/documentation/foundation/urlsessionconfiguration
@interface NSURLSessionConfiguration : NSObject <NSCopying>
// https://developer.apple.com/documentation/foundation/urlsessionconfiguration/ephemeral
@property(class, readonly, strong) NSURLSessionConfiguration *ephemeralSessionConfiguration;
// https://developer.apple.com/documentation/foundation/urlsessionconfiguration/timeoutintervalforrequest
@property NSTimeInterval timeoutIntervalForRequest;
// https://developer.apple.com/documentation/foundation/urlsessionconfiguration/timeoutintervalforresource
@property NSTimeInterval timeoutIntervalForResource;
// https://developer.apple.com/documentation/foundation/urlsessionconfiguration/waitsforconnectivity (iOS 11)
@property BOOL waitsForConnectivity;
@end

// https://developer.apple.com/documentation/foundation/urlsessiontask
@interface NSURLSessionTask : NSObject <NSCopying>
// https://developer.apple.com/documentation/foundation/urlsessiontask/resume()
- (void)resume;
@end
// https://developer.apple.com/documentation/foundation/urlsessiondatatask
@interface NSURLSessionDataTask : NSURLSessionTask
@end
// https://developer.apple.com/documentation/foundation/urlsessiondownloadtask
@interface NSURLSessionDownloadTask : NSURLSessionTask
@end

// https://developer.apple.com/documentation/foundation/urlsession
@interface NSURLSession : NSObject
// https://developer.apple.com/documentation/foundation/urlsession/init(configuration:)
+ (NSURLSession *)sessionWithConfiguration:(NSURLSessionConfiguration *)configuration;
// https://developer.apple.com/documentation/foundation/urlsession/datatask(with:completionhandler:)-52wk8
- (NSURLSessionDataTask *)dataTaskWithRequest:(NSURLRequest *)request
                            completionHandler:(void (^)(NSData *_Nullable data, NSURLResponse *_Nullable response,
                                                        NSError *_Nullable error))completionHandler;
// https://developer.apple.com/documentation/foundation/urlsession/downloadtask(with:completionhandler:)-5ozl9
- (NSURLSessionDownloadTask *)downloadTaskWithRequest:(NSURLRequest *)request
                                    completionHandler:(void (^)(NSURL *_Nullable location,
                                                                NSURLResponse *_Nullable response,
                                                                NSError *_Nullable error))completionHandler;
// https://developer.apple.com/documentation/foundation/urlsession/finishtasksandinvalidate()
- (void)finishTasksAndInvalidate;
@end

NS_ASSUME_NONNULL_END
