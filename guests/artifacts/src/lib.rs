//! Paths of the example guests, built by this crate's build script (see `guests/`).
//!
//! ```
//! assert!(std::path::Path::new(peapod_guests::KV_SERVER).exists());
//! ```

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
