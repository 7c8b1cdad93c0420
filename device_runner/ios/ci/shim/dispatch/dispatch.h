// Declaration-only libdispatch subset (Apple's <dispatch/dispatch.h>), as the bridge uses it.
// Under ARC, dispatch objects are Objective-C objects, as in Apple's headers (OS_OBJECT_USE_OBJC).
#pragma once

#import <Foundation/Foundation.h>

#include <stdint.h>

#ifdef __cplusplus
#define PB_DISPATCH_EXTERN extern "C"
#else
#define PB_DISPATCH_EXTERN extern
#endif

// https://developer.apple.com/documentation/dispatch/dispatch_time_t
typedef uint64_t dispatch_time_t;
// https://developer.apple.com/documentation/dispatch/dispatch_time_forever
#define DISPATCH_TIME_FOREVER (~0ull)
// https://developer.apple.com/documentation/dispatch/dispatch_block_t
typedef void (^dispatch_block_t)(void);

// https://developer.apple.com/documentation/dispatch/dispatch_semaphore_t
@protocol OS_dispatch_semaphore <NSObject>
@end
typedef NSObject<OS_dispatch_semaphore> *dispatch_semaphore_t;
// https://developer.apple.com/documentation/dispatch/1452955-dispatch_semaphore_create
PB_DISPATCH_EXTERN dispatch_semaphore_t dispatch_semaphore_create(intptr_t value);
// https://developer.apple.com/documentation/dispatch/1453087-dispatch_semaphore_wait
PB_DISPATCH_EXTERN intptr_t dispatch_semaphore_wait(dispatch_semaphore_t dsema, dispatch_time_t timeout);
// https://developer.apple.com/documentation/dispatch/1452919-dispatch_semaphore_signal
PB_DISPATCH_EXTERN intptr_t dispatch_semaphore_signal(dispatch_semaphore_t dsema);

// https://developer.apple.com/documentation/dispatch/dispatch_once_t
typedef intptr_t dispatch_once_t;
// https://developer.apple.com/documentation/dispatch/1447169-dispatch_once
PB_DISPATCH_EXTERN void dispatch_once(dispatch_once_t *predicate, dispatch_block_t block);
