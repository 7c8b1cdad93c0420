// Declaration-only XCTest subset, as the test bundle uses it. Signatures from Apple's
// documentation (https://developer.apple.com/documentation/xctest), page by page as named below.
// XCTFail is expanded the way Apple's XCTestAssertions.h and XCTestAssertionsImpl.h expand it:
// XCTFail(...) -> _XCTPrimitiveFail(self, ...) -> _XCTRegisterFailure(test, ...) ->
// _XCTFailureHandler(XCTestCase *test, BOOL expected, const char *filePath, NSUInteger lineNumber,
// NSString *condition, NSString *format, ...). So `self` must be an XCTestCase instance where
// XCTFail is written: in a class method (or a block written in one) it is the Class, which the
// compiler refuses to pass as XCTestCase *.
#pragma once

#import <Foundation/Foundation.h>

#include "../PBShim.h"

NS_ASSUME_NONNULL_BEGIN

@class XCTAttachment;

// https://developer.apple.com/documentation/xctest/xctest
@interface XCTest : NSObject
@property(readonly, copy) NSString *name;
@end

// https://developer.apple.com/documentation/xctest/xctactivity
@protocol XCTActivity <NSObject>
@property(readonly, copy) NSString *name;
// https://developer.apple.com/documentation/xctest/xctactivity/add(_:)
- (void)addAttachment:(XCTAttachment *)attachment;
@end

// https://developer.apple.com/documentation/xctest/xctmetric
@protocol XCTMetric <NSCopying, NSObject>
@end

// https://developer.apple.com/documentation/xctest/xctclockmetric [iOS 13]
@interface XCTClockMetric : NSObject <XCTMetric>
// https://developer.apple.com/documentation/xctest/xctclockmetric/init()
- (instancetype)init;
@end

// https://developer.apple.com/documentation/xctest/xctmemorymetric [iOS 13]
@interface XCTMemoryMetric : NSObject <XCTMetric>
// https://developer.apple.com/documentation/xctest/xctmemorymetric/init()
- (instancetype)init;
@end

// https://developer.apple.com/documentation/xctest/xctmeasureoptions [iOS 13]
@interface XCTMeasureOptions : NSObject <NSCopying>
// https://developer.apple.com/documentation/xctest/xctmeasureoptions/default
@property(class, readonly, strong) XCTMeasureOptions *defaultOptions;
// https://developer.apple.com/documentation/xctest/xctmeasureoptions/iterationcount
// (the block runs iterationCount + 1 times; the first run is ignored)
@property(nonatomic) NSUInteger iterationCount;
@end

// https://developer.apple.com/documentation/xctest/xctattachment/lifetime-swift.enum
typedef NS_ENUM(NSInteger, XCTAttachmentLifetime) {
  XCTAttachmentLifetimeKeepAlways = 0,
  XCTAttachmentLifetimeDeleteOnSuccess = 1,
};

// https://developer.apple.com/documentation/xctest/xctattachment
@interface XCTAttachment : NSObject
// https://developer.apple.com/documentation/xctest/xctattachment/init(data:uniformtypeidentifier:)
+ (instancetype)attachmentWithData:(NSData *)payload uniformTypeIdentifier:(NSString *)identifier;
// https://developer.apple.com/documentation/xctest/xctattachment/name
@property(atomic, copy, nullable) NSString *name;
// https://developer.apple.com/documentation/xctest/xctattachment/lifetime-swift.property
@property(atomic, assign) XCTAttachmentLifetime lifetime;
@end

// https://developer.apple.com/documentation/xctest/xctestcase
@interface XCTestCase : XCTest <XCTActivity>
// https://developer.apple.com/documentation/xctest/xctestcase/init(selector:)
+ (instancetype)testCaseWithSelector:(SEL)selector;
// https://developer.apple.com/documentation/xctest/xctestcase/setup()-6kazu (class-level set-up)
+ (void)setUp;
// https://developer.apple.com/documentation/xctest/xctestcase/teardown()-4t5ok (class-level tear-down)
+ (void)tearDown;
- (void)setUp;
- (void)tearDown;
// https://developer.apple.com/documentation/xctest/xctestcase/measure(metrics:options:block:) [iOS 13]
- (void)measureWithMetrics:(NSArray<id<XCTMetric>> *)metrics
                   options:(XCTMeasureOptions *)options
                     block:(void (NS_NOESCAPE ^)(void))block;
@end

// Apple's XCTestAssertionsImpl.h: the failure handler every assertion macro ends in.
#ifdef __cplusplus
extern "C"
#endif
void _XCTFailureHandler(XCTestCase *test, BOOL expected, const char *filePath, NSUInteger lineNumber,
                        NSString *condition, NSString *_Nullable format, ...) NS_FORMAT_FUNCTION(6, 7);

NS_ASSUME_NONNULL_END

#define _XCTRegisterFailure(test, condition, ...) \
  ({ _XCTFailureHandler(test, YES, __FILE__, __LINE__, condition, @"" __VA_ARGS__); })
#define _XCTPrimitiveFail(test, ...) ({ _XCTRegisterFailure(test, @"failed", __VA_ARGS__); })
// https://developer.apple.com/documentation/xctest/xctfail
#define XCTFail(...) _XCTPrimitiveFail(self, __VA_ARGS__)
