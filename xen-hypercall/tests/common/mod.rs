//! Shared by the test files: every test runs against both buffer modes.

#![allow(dead_code)]

use xen_hypercall::mock::{BufferMode, MockConfig, MockXen};

/// A default mock (dom0, privileged) for each buffer mode.
pub(crate) fn mocks() -> [MockXen; 2] {
    [BufferMode::Direct, BufferMode::Bounce].map(|mode| MockXen::new().with_buffers(mode))
}

/// A mock with `config` for each buffer mode.
pub(crate) fn mocks_with(config: MockConfig) -> [MockXen; 2] {
    [BufferMode::Direct, BufferMode::Bounce].map(|mode| {
        MockXen::with_config(MockConfig {
            buffers: mode,
            ..config.clone()
        })
    })
}
