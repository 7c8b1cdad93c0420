// Replays the collector's fixture set on the device: one XCTest per model x form x size x
// compute unit, named test_<model>__<variant>__<size>[__<computeUnits>]. The methods are added
// to the class in +initialize, before XCTest lists the class's test methods, so XCTest builds
// its usual suite for the class and calls the class-level +setUp and +tearDown around it.
#import <XCTest/XCTest.h>
#import <objc/runtime.h>

#import "PBRunner.h"

@interface PBDeviceTests : XCTestCase
@end

static PBRunner *gRunner;
static NSString *gSetupError;
static BOOL gRunOpened;

@implementation PBDeviceTests

+ (void)initialize {
  if (self != [PBDeviceTests class]) return;
  static dispatch_once_t once;
  dispatch_once(&once, ^{
    NSError *error = nil;
    gRunner = [PBRunner runnerFromEnvironment:&error];
    NSArray<PBTestSpec *> *tests = gRunner ? gRunner.tests : @[];
    if (gRunner == nil || tests.count == 0) {
      // Still one test, failing with the reason, so a misconfigured run is never green.
      gSetupError = error ? error.localizedDescription
                          : @"the fixture set has no case this test bundle can run (check the forms it was built with)";
      class_addMethod([PBDeviceTests class], NSSelectorFromString(@"test_configuration"),
                      imp_implementationWithBlock(^(PBDeviceTests *test) {
                        [test failConfiguration];
                      }),
                      "v@:");
      return;
    }
    for (PBTestSpec *spec in tests) {
      class_addMethod([PBDeviceTests class], NSSelectorFromString(spec.testName),
                      imp_implementationWithBlock(^(PBDeviceTests *test) {
                        [test replay:spec];
                      }),
                      "v@:");
    }
  });
}

+ (void)setUp {
  [super setUp];
  [self openRunOnce];
}

+ (void)tearDown {
  NSError *error = nil;
  if (gRunner && gRunOpened && ![gRunner finishRun:&error]) {
    NSLog(@"parbench: could not complete run %@: %@", gRunner.runId, error.localizedDescription);
  }
  [super tearDown];
}

// PUT the run (idempotent); also called from the first test, should the class +setUp not run.
+ (void)openRunOnce {
  if (gRunner == nil || gSetupError != nil || gRunOpened) return;
  NSError *error = nil;
  if ([gRunner openRun:&error]) {
    gRunOpened = YES;
  } else {
    gSetupError = error.localizedDescription;
  }
}

- (void)failConfiguration {
  XCTFail(@"%@", gSetupError);
}

- (void)replay:(PBTestSpec *)spec {
  [PBDeviceTests openRunOnce];
  if (gSetupError) {
    XCTFail(@"%@", gSetupError);
    return;
  }
  NSMutableArray<NSString *> *failures = [NSMutableArray array];
  NSData *doc = [gRunner runTest:spec
                        failures:failures
                         measure:^(void (^runOnce)(void)) {
                           XCTMeasureOptions *options = [XCTMeasureOptions defaultOptions];
                           options.iterationCount = (NSUInteger)MAX(1, gRunner.measureIterations);
                           [self measureWithMetrics:@[ [[XCTClockMetric alloc] init], [[XCTMemoryMetric alloc] init] ]
                                            options:options
                                              block:runOnce];
                         }];
  // `parbench device import` reads these back from the .xcresult bundle.
  XCTAttachment *attachment = [XCTAttachment attachmentWithData:doc uniformTypeIdentifier:@"public.json"];
  attachment.name = [spec.testName stringByAppendingString:@".json"];
  attachment.lifetime = XCTAttachmentLifetimeKeepAlways;
  [self addAttachment:attachment];
  NSError *error = nil;
  if (![gRunner postResults:&error]) XCTFail(@"posting to the collector failed: %@", error.localizedDescription);
  for (NSString *failure in failures) XCTFail(@"%@", failure);
}

@end
