// Declaration-only CoreVideo (and the CoreFoundation types it needs) subset: pixel buffers.
// Signatures from https://developer.apple.com/documentation/corevideo/cvpixelbuffer and the
// pages named below.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// https://developer.apple.com/documentation/kernel/ostype
typedef uint32_t OSType;
// https://developer.apple.com/documentation/corefoundation/cfallocator
typedef const struct __CFAllocator *CFAllocatorRef;
// https://developer.apple.com/documentation/corefoundation/kcfallocatordefault
extern const CFAllocatorRef kCFAllocatorDefault;
// https://developer.apple.com/documentation/corefoundation/cfdictionary
typedef const struct __CFDictionary *CFDictionaryRef;

// https://developer.apple.com/documentation/corevideo/cvreturn
typedef int32_t CVReturn;
enum { kCVReturnSuccess = 0 };
// https://developer.apple.com/documentation/corevideo/cvbuffer
typedef struct __CVBuffer *CVBufferRef;
// https://developer.apple.com/documentation/corevideo/cvimagebuffer
typedef CVBufferRef CVImageBufferRef;
// https://developer.apple.com/documentation/corevideo/cvpixelbuffer
typedef CVImageBufferRef CVPixelBufferRef;

// https://developer.apple.com/documentation/corevideo/1563591-pixel_format_identifiers
enum {
  kCVPixelFormatType_32ARGB = 0x00000020,
  kCVPixelFormatType_32BGRA = 'BGRA',
  kCVPixelFormatType_OneComponent8 = 'L008',
};

// https://developer.apple.com/documentation/corevideo/cvpixelbufferlockflags
typedef uint64_t CVPixelBufferLockFlags;
enum { kCVPixelBufferLock_ReadOnly = 0x00000001 };

// https://developer.apple.com/documentation/corevideo/1456758-cvpixelbuffercreate
CVReturn CVPixelBufferCreate(CFAllocatorRef allocator, size_t width, size_t height, OSType pixelFormatType,
                             CFDictionaryRef pixelBufferAttributes, CVPixelBufferRef *pixelBufferOut);
// https://developer.apple.com/documentation/corevideo/1457128-cvpixelbufferlockbaseaddress
CVReturn CVPixelBufferLockBaseAddress(CVPixelBufferRef pixelBuffer, CVPixelBufferLockFlags lockFlags);
// https://developer.apple.com/documentation/corevideo/1454732-cvpixelbufferunlockbaseaddress
CVReturn CVPixelBufferUnlockBaseAddress(CVPixelBufferRef pixelBuffer, CVPixelBufferLockFlags unlockFlags);
// https://developer.apple.com/documentation/corevideo/1457115-cvpixelbuffergetbaseaddress
void *CVPixelBufferGetBaseAddress(CVPixelBufferRef pixelBuffer);
// https://developer.apple.com/documentation/corevideo/1454095-cvpixelbuffergetbytesperrow
size_t CVPixelBufferGetBytesPerRow(CVPixelBufferRef pixelBuffer);
// https://developer.apple.com/documentation/corevideo/1456707-cvpixelbufferrelease
void CVPixelBufferRelease(CVPixelBufferRef texture);

#ifdef __cplusplus
}
#endif
