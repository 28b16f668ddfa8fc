# shellcheck shell=bash
# The variables are set for the script that sources this file:
# shellcheck disable=SC2034
# Sourced: the boards peapod is built and tested for, each its Rust target and the emulator that
# runs its binaries here (the same commands as the runners in .cargo/config.toml).
#   board NAME|TARGET   sets board_name, board_target, board_runner (an array); fails if unknown
board() {
    case "$1" in
        aarch64 | aarch64-unknown-linux-gnu)
            board_name=aarch64 board_target=aarch64-unknown-linux-gnu
            board_runner=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
        armv7 | armv7-unknown-linux-gnueabihf)
            board_name=armv7 board_target=armv7-unknown-linux-gnueabihf
            board_runner=(qemu-arm -L /usr/arm-linux-gnueabihf) ;;
        *) return 1 ;;
    esac
}
