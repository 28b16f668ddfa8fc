//! What the process says once: a warning that would otherwise repeat for every pod (an
//! emulator without neighbour messages, a host without nf_tables).

/// Runs its statements (a `tracing` call) the first time the process reaches this place, and
/// nothing later; evaluates to whether they ran.
macro_rules! once {
    ($($body:tt)*) => {{
        static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let first = !DONE.swap(true, std::sync::atomic::Ordering::Relaxed);
        if first {
            $($body)*
        }
        first
    }};
}

pub(crate) use once;

#[cfg(test)]
mod tests {
    #[test]
    fn each_place_runs_once() {
        let mut ran = Vec::new();
        for i in 0..3 {
            let a = super::once! { ran.push(("a", i)); };
            let b = super::once! { ran.push(("b", i)); };
            assert_eq!((a, b), (i == 0, i == 0));
        }
        assert_eq!(ran, [("a", 0), ("b", 0)]);
    }
}
