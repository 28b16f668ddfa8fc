//! How linear memories are laid out in the address space: decided once per process, at start.
//!
//! - *Guarded*: wasmtime's 64-bit default: 4 GiB of address space reserved per memory, and a
//!   32 MiB guard after it. Every 32-bit address a guest can form falls inside the reservation
//!   or its guard, so compiled code loads and stores without checking bounds, and a memory grows
//!   in place. The fastest code, but ~4 GiB of address space per memory.
//! - *Bounded*: 16 MiB reserved per memory, grown in 16 MiB steps (moved when it outgrows its
//!   reservation), 64 KiB guards: a memory costs its size plus ~16 MiB of address space, so a
//!   Raspberry Pi OS kernel's 512 GiB (39-bit VA) holds tens of thousands of memories instead
//!   of ~125; compiled code checks bounds explicitly (~30% of a byte-pushing guest's
//!   throughput).
//!
//! A process chooses guarded when its address space (the smaller of the kernel's user address
//! space and `RLIMIT_AS`) has room for [`GUARDED_MEMORIES`] guarded memories, bounded otherwise;
//! `PEAPOD_MEMORIES=guarded|bounded` sets it. Code compiled under one does not load under the
//! other: the compile cache is keyed by the engine's settings, and a `.cwasm` made for the other
//! layout is refused with a message that says so.

use std::sync::OnceLock;

/// The two layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Guarded,
    Bounded,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Guarded => "guarded",
            Layout::Bounded => "bounded",
        }
    }
}

/// Address space a guarded memory takes: wasmtime's 64-bit defaults (4 GiB and a 32 MiB guard).
pub const GUARDED_SPAN: u64 = (4 << 30) + (32 << 20);

/// How many guarded memories the address space must hold for the guarded layout: four for each
/// of a thousand pods (16 TiB): x86_64's 128 TiB and a 48-bit arm64 kernel's 256 TiB have it,
/// a 39-bit Raspberry Pi OS kernel's 512 GiB has not.
pub const GUARDED_MEMORIES: u64 = 4096;

/// The variable that sets the layout instead of the address space.
pub const VARIABLE: &str = "PEAPOD_MEMORIES";

/// The process's layout and why: decided at the first call.
pub fn chosen() -> Result<(Layout, &'static str), String> {
    static CHOSEN: OnceLock<Result<(Layout, String), String>> = OnceLock::new();
    CHOSEN
        .get_or_init(|| decide(std::env::var(VARIABLE).ok().as_deref(), address_space()))
        .as_ref()
        .map(|(l, why)| (*l, why.as_str()))
        .map_err(Clone::clone)
}

/// The layout of code compiled for another target (`peapod compile --target`): a board's,
/// bounded, unless [`VARIABLE`] says guarded.
pub fn for_target() -> Result<Layout, String> {
    decide(std::env::var(VARIABLE).ok().as_deref(), Some(0)).map(|(l, _)| l)
}

/// The layout for `variable`'s value (when set) or an address space of `space` bytes.
fn decide(variable: Option<&str>, space: Option<u64>) -> Result<(Layout, String), String> {
    match variable.map(str::trim) {
        Some("guarded") if cfg!(target_pointer_width = "32") => {
            return Err(format!(
                "{VARIABLE}=guarded: a 32-bit process cannot reserve 4 GiB per memory"
            ));
        }
        Some("guarded") => return Ok((Layout::Guarded, format!("{VARIABLE}=guarded"))),
        Some("bounded") => return Ok((Layout::Bounded, format!("{VARIABLE}=bounded"))),
        Some("" | "auto") | None => {}
        Some(other) => {
            return Err(format!(
                "{VARIABLE}={other:?}: expected guarded, bounded or auto"
            ));
        }
    }
    let need = GUARDED_MEMORIES * GUARDED_SPAN;
    if cfg!(target_pointer_width = "32") {
        return Ok((Layout::Bounded, "a 32-bit process".to_string()));
    }
    Ok(match space {
        Some(s) if s >= need => (
            Layout::Guarded,
            format!(
                "the address space ({}) holds {GUARDED_MEMORIES} guarded memories",
                gib(s)
            ),
        ),
        Some(s) => (
            Layout::Bounded,
            format!(
                "the address space ({}) holds fewer than {GUARDED_MEMORIES} guarded memories",
                gib(s)
            ),
        ),
        None => (
            Layout::Bounded,
            "the address space could not be measured".to_string(),
        ),
    })
}

fn gib(bytes: u64) -> String {
    format!("{} GiB", bytes >> 30)
}

/// The address space this process may use: the kernel's user address space (the next power of
/// two above its highest mapping, the stack's, below the kernel's half) or `RLIMIT_AS` when
/// smaller.
pub fn address_space() -> Option<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let top = maps
        .lines()
        .filter_map(|l| {
            let (_, end) = l.split_whitespace().next()?.split_once('-')?;
            u64::from_str_radix(end, 16).ok()
        })
        // x86_64's vsyscall page sits in the kernel's half.
        .filter(|end| *end < 1 << 63)
        .max()?;
    let user = top.checked_next_power_of_two()?;
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_AS)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|s| *s != nix::sys::resource::RLIM_INFINITY)
        .map(widen);
    Some(limit.map_or(user, |l| l.min(user)))
}

/// A limit as u64: `rlim_t` is 32 bits on 32-bit ARM, 64 elsewhere.
#[allow(clippy::useless_conversion)]
fn widen(v: nix::sys::resource::rlim_t) -> u64 {
    v.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_address_space_decides_unless_told() {
        let tib = 1u64 << 40;
        let (l, why) = decide(None, Some(128 * tib)).unwrap();
        assert_eq!(l, Layout::Guarded, "x86_64: {why}");
        assert_eq!(decide(None, Some(256 * tib)).unwrap().0, Layout::Guarded);
        let (l, why) = decide(None, Some(512 << 30)).unwrap();
        assert_eq!(l, Layout::Bounded, "a 39-bit board");
        assert!(why.contains("512 GiB"), "{why}");
        assert_eq!(decide(None, None).unwrap().0, Layout::Bounded);
        assert_eq!(
            decide(Some("auto"), Some(512 << 30)).unwrap().0,
            Layout::Bounded
        );
        assert_eq!(
            decide(Some("guarded"), Some(512 << 30)).unwrap().0,
            Layout::Guarded
        );
        assert_eq!(
            decide(Some("bounded"), Some(128 * tib)).unwrap().0,
            Layout::Bounded
        );
        let e = decide(Some("fast"), None).unwrap_err();
        assert!(e.contains("PEAPOD_MEMORIES=\"fast\""), "{e}");
    }

    #[cfg(target_pointer_width = "32")]
    #[test]
    fn a_32_bit_process_is_bounded() {
        assert_eq!(decide(None, Some(4 << 30)).unwrap().0, Layout::Bounded);
        assert!(decide(Some("guarded"), None).is_err());
        assert_eq!(decide(Some("bounded"), None).unwrap().0, Layout::Bounded);
    }

    #[test]
    fn this_process_address_space_is_measured() {
        let space = address_space().expect("measured");
        // The stack is in it, and so is the heap.
        let local = 0u8;
        let heap = Box::new(0u8);
        assert!((&raw const local as u64) < space, "{space:#x}");
        assert!((&raw const *heap as u64) < space, "{space:#x}");
    }
}
