# Cross build for aarch64 Linux with Debian's cross toolchain (g++-aarch64-linux-gnu) and the
# arm64 -dev packages of the libraries (multiarch: dpkg --add-architecture arm64; see
# scripts/install_deps.sh --aarch64). CTest runs the test programs under qemu-user.
#   cmake -S . -B build-arm -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_ASM_COMPILER aarch64-linux-gnu-gcc)

# Libraries and their CMake packages: the arm64 ones only (/usr/lib/aarch64-linux-gnu, found
# through CMAKE_LIBRARY_ARCHITECTURE); programs (ninja, the code generators) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# qemu-user runs what the build made: CTest's tests and the programs they start themselves. No
# -L /usr/aarch64-linux-gnu: the arm64 libraries the build links (libhwy1:arm64, ...) bring
# libc6:arm64, and the host's ld.so.cache finds its libc; the cross toolchain's loader under -L
# would pair with that libc (another Debian revision) and hangs in the first pthread_create.
# QEMU_CPU in a test's environment picks the emulated CPU (and so the SIMD target); unset, it is
# qemu's "max" (NEON, SVE and SVE2, 512-bit vectors).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
