//! dom0's xenstore steps with the domU ([`exchange::store`]): the domU's watch over its ring fires
//! on a write of the project's client, with Debian's `xenstore-read`/`-write`/`-exists` as the
//! oracle in both directions.

use std::time::Duration;

use xen_testbed_protocol::exchange;
use xen_testbed_protocol::exchange::store::{
    DOM0_SAYS, DOM0_SAYS_VALUE, DOMU_HEARD, OUTSIDE_HOME, WATCHING,
};

use super::{Domain, Steps, expect_equal};
use crate::run_tool;

/// How long dom0 waits for each of the domU's keys.
const KEY_TIMEOUT: Duration = Duration::from_secs(exchange::store::WATCH_WAIT_SECONDS);

/// A key Debian's `xenstore-write` writes for the project's client to read.
const CLI_KEY: &str = "data/dom0-cli";
const CLI_VALUE: &str = "written by xenstore-write";

/// `store_domu_watch_fired`: once the domU watches, dom0 changes the key and waits for the domU
/// to echo what its watch made it read.
pub(super) fn watch_fired(steps: &mut Steps, domain: &Domain) {
    steps.step("store_domu_watch_fired", |out| {
        // Debian's tool writes, ours reads.
        run_tool("xenstore-write", &[&domain.path(CLI_KEY), CLI_VALUE])?;
        expect_equal(CLI_KEY, &domain.read(CLI_KEY)?, CLI_VALUE)?;
        domain.wait_for_key(WATCHING, "1", KEY_TIMEOUT)?;
        domain.write(DOM0_SAYS, DOM0_SAYS_VALUE)?;
        // Ours writes, Debian's tool reads.
        let theirs = run_tool("xenstore-read", &[&domain.path(DOM0_SAYS)])?;
        expect_equal(
            "xenstore-read",
            theirs.trim_end_matches('\n'),
            DOM0_SAYS_VALUE,
        )?;
        domain.wait_for_key(DOMU_HEARD, DOM0_SAYS_VALUE, KEY_TIMEOUT)?;
        out.out(format_args!(
            "wrote {DOM0_SAYS} while the domU watched it; it read {DOM0_SAYS_VALUE:?} back"
        ));
        Ok(())
    });
}

/// `store_domu_wrote_nothing_outside`: after the domU is gone, its refused write left nothing
/// in dom0's home.
pub(super) fn nothing_outside(steps: &mut Steps) {
    steps.step("store_domu_wrote_nothing_outside", |_| {
        match run_tool("xenstore-exists", &[OUTSIDE_HOME]) {
            Ok(_) => Err(format!("{OUTSIDE_HOME} exists")),
            Err(_) => Ok(()),
        }
    });
}
