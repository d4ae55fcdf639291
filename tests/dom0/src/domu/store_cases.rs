//! dom0's xenstore steps with the domU ([`exchange::store`]): the domU's watch over its ring fires
//! on a write of the project's client, with Debian's `xenstore-read`/`-write`/`-exists` as the
//! oracle in both directions.

use std::time::Duration;

use xen_testbed_protocol::exchange;
use xen_testbed_protocol::exchange::store::{DOM0_SAYS, DOM0_SAYS_VALUE, OUTSIDE_HOME, WATCHING};

use super::{Domain, Steps, expect_equal};
use crate::run_tool;

/// How long dom0 waits for the domU's watch.
const KEY_TIMEOUT: Duration = Duration::from_secs(exchange::store::WATCH_WAIT_SECONDS);

/// A key Debian's `xenstore-write` writes for the project's client to read, and the reverse.
const ORACLE_KEY: &str = "data/dom0-oracle";

/// `store_domu_watch_changed`: Debian's tools and ours read each other's writes; once the domU
/// watches, dom0 changes the key (the domU's case says whether its watch fired). Nothing follows
/// the change: the domU may finish, and its home go, at once.
pub(super) fn change_watched_key(steps: &mut Steps, domain: &Domain) {
    steps.step("store_domu_watch_changed", |out| {
        // Debian's tool writes, ours reads.
        let path = domain.path(ORACLE_KEY);
        run_tool("xenstore-write", &[&path, "written by xenstore-write"])?;
        expect_equal(
            "our read",
            &domain.read(ORACLE_KEY)?,
            "written by xenstore-write",
        )?;
        // Ours writes, Debian's tool reads.
        domain.write(ORACLE_KEY, "written by xen-store")?;
        let theirs = run_tool("xenstore-read", &[&path])?;
        expect_equal(
            "xenstore-read",
            theirs.trim_end_matches('\n'),
            "written by xen-store",
        )?;
        domain.wait_for_key(WATCHING, "1", KEY_TIMEOUT)?;
        domain.write(DOM0_SAYS, DOM0_SAYS_VALUE)?;
        out.out(format_args!(
            "wrote {DOM0_SAYS} = {DOM0_SAYS_VALUE:?} while the domU watched it"
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
