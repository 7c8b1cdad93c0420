// Replays the collector's fixture set on the device: one XCTest per model x form x size x
// compute unit, created when the bundle loads (+defaultTestSuite), named
// test_<model>__<variant>__<size>[__<computeUnits>].
#import <XCTest/XCTest.h>
#import <objc/runtime.h>

#import "PBRunner.h"

@interface PBDeviceTests : XCTestCase
@end

static PBRunner *gRunner;
static NSString *gSetupError;

@implementation PBDeviceTests

+ (XCTestSuite *)defaultTestSuite {
  XCTestSuite *suite = [XCTestSuite testSuiteWithName:NSStringFromClass(self)];
  NSError *error = nil;
  gRunner = [PBRunner runnerFromEnvironment:&error];
  NSArray<PBTestSpec *> *tests = gRunner ? gRunner.tests : @[];
  if (gRunner == nil || tests.count == 0) {
    // Still one test, failing with the reason, so a misconfigured run is never green.
    gSetupError = error ? error.localizedDescription : @"the collector's fixture set has no case this device can run";
    SEL sel = NSSelectorFromString(@"test_configuration");
    class_addMethod(self, sel, imp_implementationWithBlock(^(PBDeviceTests *test) {
                      XCTFail(@"%@", gSetupError);
                    }),
                    "v@:");
    [suite addTest:[self testCaseWithSelector:sel]];
    return suite;
  }
  for (PBTestSpec *spec in tests) {
    SEL sel = NSSelectorFromString(spec.testName);
    class_addMethod(self, sel, imp_implementationWithBlock(^(PBDeviceTests *test) {
                      [test replay:spec];
                    }),
                    "v@:");
    [suite addTest:[self testCaseWithSelector:sel]];
  }
  return suite;
}

+ (void)setUp {
  [super setUp];
  NSError *error = nil;
  if (gRunner && !gSetupError && ![gRunner openRun:&error]) gSetupError = error.localizedDescription;
}

+ (void)tearDown {
  NSError *error = nil;
  if (gRunner && !gSetupError && ![gRunner finishRun:&error]) {
    NSLog(@"parbench: could not complete run %@: %@", gRunner.runId, error.localizedDescription);
  }
  [super tearDown];
}

- (void)replay:(PBTestSpec *)spec {
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
