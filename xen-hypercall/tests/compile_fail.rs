//! The misuses the buffer types must reject at compile time.

#[test]
#[cfg_attr(miri, ignore = "trybuild runs rustc, which Miri cannot")]
fn buffers_reject_misuse() {
    trybuild::TestCases::new().compile_fail("tests/compile-fail/*.rs");
}
