// Declaration-only subset of SSZipArchive (the CocoaPods pod 'SSZipArchive', ~> 2.4), from its
// public header SSZipArchive/SSZipArchive.h at tag v2.4.2:
// https://github.com/ZipArchive/ZipArchive/blob/v2.4.2/SSZipArchive/SSZipArchive.h
#pragma once

#import <Foundation/Foundation.h>

NS_ASSUME_NONNULL_BEGIN

@interface SSZipArchive : NSObject
+ (BOOL)unzipFileAtPath:(NSString *)path toDestination:(NSString *)destination;
@end

NS_ASSUME_NONNULL_END
