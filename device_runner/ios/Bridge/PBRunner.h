// Objective-C face of the C++ core for the XCTest target: everything it does (manifest, hashes,
// runners, timing, metrics, result JSON, posting) happens in device_runner/core.
#import <Foundation/Foundation.h>

NS_ASSUME_NONNULL_BEGIN

extern NSErrorDomain const PBRunnerErrorDomain;

// One XCTest method: every case of one model x form x size x compute unit.
@interface PBTestSpec : NSObject
@property(nonatomic, readonly) NSString *testName;  // test_<model>__<variant>__<size>[__<computeUnits>]
@property(nonatomic, readonly) NSString *model;
@property(nonatomic, readonly) NSString *variant;
@property(nonatomic, readonly) NSInteger size;
@property(nonatomic, readonly, nullable) NSString *computeUnits;
@property(nonatomic, readonly) NSUInteger caseCount;
@end

@interface PBRunner : NSObject

// Reads the environment of the test process (xcodebuild passes TEST_RUNNER_X as X):
//   PARBENCH_COLLECTOR + PARBENCH_TOKEN (fixtures from and results to the collector over the
//   network), or PARBENCH_USB_PORT + PARBENCH_TOKEN (USB mode: listen on 127.0.0.1:PORT and reach
//   the collector through `parbench device relay` on the Mac, no network or Local Network
//   prompt), and/or PARBENCH_FIXTURES_DIR (a fixture set copied into the app's Documents: no
//   network needed; results then only go to the test attachments unless a collector is given),
//   PARBENCH_ROUNDS (10),
//   PARBENCH_WARMUP (3), PARBENCH_THREADS (1), PARBENCH_MEASURE_ITERATIONS (5),
//   PARBENCH_MODELS, PARBENCH_VARIANTS, PARBENCH_SIZES, PARBENCH_COMPUTE_UNITS (comma lists),
//   PARBENCH_RUN_ID, PARBENCH_COMMIT.
// Checks the collector's health and reads the manifest; nil with a readable error if not.
+ (nullable instancetype)runnerFromEnvironment:(NSError **)error;

@property(nonatomic, readonly) NSArray<PBTestSpec *> *tests;
@property(nonatomic, readonly) NSString *runId;
@property(nonatomic, readonly) NSInteger measureIterations;

// PUT the run (idempotent).
- (BOOL)openRun:(NSError **)error;

// Runs every case of `spec` with the core (load, first run, warm-up, timed rounds, metrics),
// then calls `measure` once with a block running one warm inference of the first case (for
// XCTest's clock and memory metrics). Returns the result document (JSON: run_id, run,
// results) to attach to the test; `failures` gets one message per failed case.
- (NSData *)runTest:(PBTestSpec *)spec
           failures:(NSMutableArray<NSString *> *)failures
            measure:(void (^)(void (^runOnce)(void)))measure;

// Posts the results of the last test (retrying with the same run id).
- (BOOL)postResults:(NSError **)error;

// Marks the run complete with the number of results posted, and removes the runners' temporary
// files (unzipped and compiled Core ML packages).
- (BOOL)finishRun:(NSError **)error;

@end

NS_ASSUME_NONNULL_END
