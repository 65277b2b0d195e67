//! The accept loop: HTTP/1.1 connections with a header read timeout, at most
//! `max_connections` at once, and a shutdown that ends within its deadline whatever the
//! clients do.

use crate::App;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long connections get to close after the running requests were cancelled, before the
/// server returns without them.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves `app` on `listener` until `shutdown` completes; see [`crate::serve`].
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = impl Sized> + Send + 'static,
    deadline: Duration,
) -> std::io::Result<()> {
    app.bind(listener.local_addr()?);
    let router = crate::router(app.clone());
    let open = Arc::new(Semaphore::new(
        app.options.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.options.header_timeout);
    tokio::pin!(shutdown);
    loop {
        // A free slot first: past the cap, clients wait in the kernel's backlog.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = open.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a little rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Streams send one small event per token.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    app.close();
    let scheduler = app.scheduler.clone();
    // Off the async threads: waiting blocks.
    tokio::task::spawn_blocking(move || {
        if !scheduler.wait_idle(deadline) {
            scheduler.cancel_all();
        }
    });
    // Idle connections close now, busy ones after their response, which the scheduler ends
    // by the deadline; one that a client keeps open (or a request stuck before the
    // scheduler) is left behind after the grace.
    let _ = tokio::time::timeout(deadline.saturating_add(CLOSE_GRACE), graceful.shutdown()).await;
    Ok(())
}
