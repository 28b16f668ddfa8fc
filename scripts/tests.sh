# shellcheck shell=bash
# Sourced by scripts/test and scripts/test-board. The integration tests that need root (network
# namespaces, bridges, mounts) are #[ignore = "needs root ..."]: a plain `cargo test` shows them as
# ignored, not as passed. These scripts run them when they can.
#   with_root_tests ARGS...   sets test_args to ARGS (cargo test args [-- harness args]) plus
#                             --include-ignored for the harness when we are root; without root
#                             it says so, and fails under CI=true
with_root_tests() {
    test_args=("$@")
    if [ "$(id -u)" -ne 0 ]; then
        if [ "${CI:-}" = true ]; then
            echo "tests: the integration tests need root, and CI=true forbids skipping them" >&2
            exit 1
        fi
        echo "tests: not root: the tests that need root are ignored" >&2
        return
    fi
    local a
    for a in "$@"; do
        if [ "$a" = -- ]; then
            test_args+=(--include-ignored)
            return
        fi
    done
    test_args+=(-- --include-ignored)
}
