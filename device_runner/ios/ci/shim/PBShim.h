// Common macros of the declaration-only Apple headers used by check_bridge.py. Everything in
// this folder is written for the compile check on Linux (clang + GNUstep Foundation): each
// declaration gives the signature documented by Apple (or, for SSZipArchive, by its own
// header) and names the page it comes from. Nothing here is linked or run.
#pragma once

#define PB_DEPRECATED(message) __attribute__((deprecated(message)))
#ifndef NS_NOESCAPE
#define NS_NOESCAPE __attribute__((noescape))
#endif
#ifndef NS_SWIFT_NAME
#define NS_SWIFT_NAME(name)
#endif
#ifndef NS_REFINED_FOR_SWIFT
#define NS_REFINED_FOR_SWIFT
#endif
#ifndef NS_ASSUME_NONNULL_BEGIN
#define NS_ASSUME_NONNULL_BEGIN _Pragma("clang assume_nonnull begin")
#define NS_ASSUME_NONNULL_END _Pragma("clang assume_nonnull end")
#endif
