//! Feeds arbitrary bytes to the head-update decoders, as a device's update slot or a `.vup`
//! file from anyone would hold them: the in-place decoder the firmware runs, postcard's own,
//! the snapshot reader and the update-file parser with its checks.
//!
//! Run: `scripts/fuzz head_update [SECONDS]` (cargo-fuzz, nightly).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_client::update_file::UpdateFile;
use vigil_core::adapt::HeadSnapshot;
use vigil_core::update::HeadUpdate;

fuzz_target!(|data: &[u8]| {
    // The in-place decoder must agree with postcard's derived one on every input.
    let mut in_place = HeadUpdate::empty();
    let decoded = in_place.decode_into(data);
    let derived = postcard::from_bytes::<HeadUpdate>(data);
    match (&decoded, &derived) {
        (Ok(()), Ok(head)) => {
            // Bytes, not values: a NaN never equals itself.
            let a = postcard::to_allocvec(&in_place).expect("a decoded head encodes");
            let b = postcard::to_allocvec(head).expect("a decoded head encodes");
            assert_eq!(a, b, "decode_into and postcard disagree");
            let _ = in_place.validate();
            let _ = in_place.prototype();
        }
        (Err(_), Err(_)) => {}
        _ => panic!("decode_into {decoded:?} but postcard {:?}", derived.as_ref().map(|_| ())),
    }
    let _ = HeadSnapshot::decode(data);
    if let Ok(file) = UpdateFile::from_bytes(data) {
        // What parses and checks out must serialise to the same bytes.
        assert_eq!(file.to_bytes().expect("a parsed file serialises"), data);
    }
});
