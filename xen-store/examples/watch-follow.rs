//! Follows a watch: prints each event's path and the value there now.
//!
//! `watch-follow PATH [COUNT]`: stops after COUNT events (default: never).

use std::future::poll_fn;
use std::pin::Pin;

use futures_core::Stream;
use xen_store::Error;
use xen_store::tokio::{AsyncClient, AsyncStore};

async fn follow(path: &str, count: Option<usize>) -> Result<(), Error> {
    let xs = AsyncClient::connect().await?;
    let mut watch = xs.watch(path).await?;
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        let Some(event) = poll_fn(|cx| Pin::new(&mut watch).poll_next(cx)).await else {
            break;
        };
        let event = event?;
        // The event says "look again": read what is there now.
        match xs.read(&event.path).await {
            Ok(value) => println!("{} = \"{}\"", event.path, value.escape_ascii()),
            Err(error) => println!("{} <{error}>", event.path),
        }
        seen += 1;
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: watch-follow PATH [COUNT]");
        std::process::exit(2);
    };
    let count = args.next().and_then(|c| c.parse().ok());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a tokio runtime");
    if let Err(error) = runtime.block_on(follow(&path, count)) {
        eprintln!("watch-follow: {error}");
        std::process::exit(1);
    }
}
