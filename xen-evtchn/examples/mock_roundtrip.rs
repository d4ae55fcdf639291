//! The round trip of the benchmark (notify one end of a loopback pair, await
//! the other end, both ways) on `mock::EvtchnDriver`, through the sync device
//! and through the tokio channel: what the backends cost above the driver,
//! without Xen. Prints the medians of `ROUNDS` samples of `TRIPS` round trips.
//!
//! `cargo run --release -p xen-rust-evtchn --features mock,tokio-1 --example mock_roundtrip`

use std::time::Instant;

use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::mock::EvtchnDriver;
use xen_evtchn::tokio::TokioEventChannel;
use xen_evtchn::{AsyncEventChannel, DomId, Error, EventChannel, Port};

const ROUNDS: usize = 15;
const TRIPS: u32 = 20_000;

/// Waits for exactly `port` on the sync device, then re-arms it.
fn await_port(device: &EvtchnDevice, port: Port) -> Result<(), Error> {
    let mut got = [Port::new(0); 4];
    loop {
        match device.take_pending(&mut got)? {
            0 => device.wait_readable(-1)?,
            1 if got[0] == port => return device.unmask(port),
            n => panic!("got {:?}, expected {port}", &got[..n]),
        }
    }
}

/// Nanoseconds per sync round trip.
fn sync_sample() -> Result<f64, Error> {
    let driver = EvtchnDriver::new();
    let device = driver.device();
    let a = device.alloc_unbound(DomId::SELF)?;
    let b = device.bind_interdomain(DomId::SELF, a.port())?;
    await_port(&device, b.port())?;
    let start = Instant::now();
    for _ in 0..TRIPS {
        b.notify()?;
        await_port(&device, a.port())?;
        a.notify()?;
        await_port(&device, b.port())?;
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(TRIPS))
}

/// Nanoseconds per tokio round trip, on a current-thread runtime.
fn tokio_sample() -> Result<f64, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let driver = EvtchnDriver::new();
        let channel = TokioEventChannel::new(driver.device())?;
        let a = channel.alloc_unbound(DomId::SELF)?;
        let b = channel.bind_interdomain(DomId::SELF, a.port())?;
        channel.wait_port(b.port()).await?;
        let start = Instant::now();
        for _ in 0..TRIPS {
            b.notify()?;
            channel.wait_port(a.port()).await?;
            a.notify()?;
            channel.wait_port(b.port()).await?;
        }
        Ok(start.elapsed().as_nanos() as f64 / f64::from(TRIPS))
    })
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() -> Result<(), Error> {
    let (mut sync, mut tokio) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        sync.push(sync_sample()?);
        tokio.push(tokio_sample()?);
    }
    let (sync, tokio) = (median(sync), median(tokio));
    println!(
        "bench evtchn mock_roundtrip tokio_ns={tokio:.0} sync_ns={sync:.0} ratio_sync={:.3}",
        tokio / sync
    );
    Ok(())
}
