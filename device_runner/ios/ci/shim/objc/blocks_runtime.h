// Environment artefact, not an Apple API: Debian's GNUstep headers include
// <objc/blocks_runtime.h> under clang -fblocks; the blocks runtime here is libBlocksRuntime.
#include <Block.h>
