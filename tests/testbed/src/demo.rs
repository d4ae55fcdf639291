//! `cargo xtask demo`: one boot of Xen with a Linux dom0 that starts Debian's toolstack, shows what
//! the project's crates report, and creates a freestanding Rust domU; the two domains exchange an
//! event and a granted page. The story is told from the serial log, both domains' lines in order.

use std::time::Duration;

use xen_testbed_protocol::exchange::split_forwarded;
use xen_testbed_protocol::{Event, parse_line, parse_log};

use crate::scenario::{
    CrossDomain, DOM0_TESTS, DomuRun, Flavour, GuestKind, build_guest, cross_domain_run,
};
use crate::verdict::CaseResult;
use crate::{Error, Outcome, Result, Testbed};

/// Boots the demo and prints it; returns whether everything passed.
pub fn demo(testbed: &Testbed) -> Result<bool> {
    let cross = CrossDomain {
        domu: GuestKind::Pv,
        selftest: None,
        run: DomuRun::Exchange,
    };
    println!(
        "Building the dom0 program and the domU kernel, fetching Xen, Linux and the toolstack ..."
    );
    let kernel = build_guest(testbed, cross.domu, Flavour::Domu)?;
    let mut run = cross_domain_run("demo", &cross, &kernel, Duration::from_secs(150));
    run.commands.insert(0, format!("{DOM0_TESTS} demo"));
    run.expected_dones += 1;
    println!("Booting Xen under QEMU (x86_64, software emulation) ...");
    let outcome = testbed.boot_linux_dom0(&run)?;
    show(&outcome)?;
    Ok(outcome.verdict.passed())
}

/// Prints the run: Xen, the toolstack, the crates' report, then both domains' lines in order.
fn show(outcome: &Outcome) -> Result<()> {
    let raw = std::fs::read(&outcome.log_path).map_err(|e| Error::io(&outcome.log_path, e))?;
    let log = parse_log(&raw);
    println!();
    println!(
        "Xen:  {}",
        outcome
            .verdict
            .banner
            .as_deref()
            .unwrap_or("(no banner: Xen did not boot)")
    );
    let toolstack = log
        .lines
        .iter()
        .any(|l| l.starts_with("init: toolstack up"));
    println!(
        "dom0: Linux with Debian's toolstack {}",
        if toolstack {
            "up (xenstored, xen-init-dom0, xenconsoled)"
        } else {
            "NOT up"
        }
    );
    let mut domu_started = false;
    for line in &log.lines {
        let (who, text) = match split_forwarded(line) {
            Some((_, console)) => ("domU", console),
            None => ("dom0", line.as_str()),
        };
        if who == "domU" && !domu_started {
            domu_started = true;
            println!(
                "\n-- the domU prints on its console ring; xenconsoled logs it, dom0 forwards it:"
            );
        }
        if text.contains("Hello from Rust in dom0") {
            println!("{who}: Xen's console shows: {}", text.trim());
            continue;
        }
        if line.starts_with(&format!("init: {DOM0_TESTS} demo")) {
            println!("\n-- what the project's crates report in dom0 (xen-hypercall-privcmd):");
            continue;
        }
        if line.starts_with(&format!("init: {DOM0_TESTS} domu")) {
            println!("\n-- dom0 creates a freestanding Rust domU with xl; the two domains talk:");
            continue;
        }
        match parse_line(text) {
            Some(Ok(Event::Out(message))) => println!("{who}: {message}"),
            Some(Ok(Event::Case { name, result })) => match result {
                Ok(()) => println!("{who}:   ok      {name}"),
                Err(message) => println!("{who}:   FAILED  {name}: {message}"),
            },
            Some(Ok(Event::Panic(message))) => println!("{who}: PANIC {message}"),
            Some(Ok(Event::Shutdown(reason))) => println!("{who}: shuts down ({reason})"),
            _ => {}
        }
    }
    let passed = outcome
        .verdict
        .cases
        .iter()
        .filter(|(_, r)| *r == CaseResult::Passed)
        .count();
    println!();
    for problem in &outcome.verdict.problems {
        println!("problem: {problem}");
    }
    for failure in outcome.verdict.failures() {
        if !outcome.verdict.problems.contains(&failure) {
            println!("failed: {failure}");
        }
    }
    println!(
        "{passed} of {} cases passed in two domains; QEMU {:.1} s, peak RSS {} MiB; full log {}",
        outcome.verdict.cases.len(),
        outcome.run.wall.as_secs_f64(),
        outcome.run.peak_rss_kib.unwrap_or(0) / 1024,
        outcome.log_path.display()
    );
    Ok(())
}
