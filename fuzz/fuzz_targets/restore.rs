//! Any snapshot bytes: restoring never panics, and what restores snapshots back to the
//! same bytes.
#![no_main]

use gameshard_engine::World;
use gameshard_engine::spec::SpecWorld;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut world = SpecWorld::new();
    if world.restore(data).is_ok() {
        let mut again = Vec::new();
        world.snapshot(&mut again);
        assert_eq!(again, data, "a restored snapshot writes back identically");
    } else {
        assert_eq!(world.entities(), 0, "a refused snapshot leaves the world empty");
    }
});
