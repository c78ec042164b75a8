//! A Tokio runtime on a thread that entered a network namespace, so the sockets of whatever runs
//! on it belong to that namespace; the thread ends on drop. Shared by bgp_netns and bfd_netns
//! (l2_netns runs its speaker as a process and has no use for it).

use std::future::Future;
use std::os::fd::AsRawFd;

pub struct InNetns {
    pub handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InNetns {
    /// Starts the thread in the namespace `netns` (by name, as `ip netns` knows it).
    pub fn start(netns: &str) -> InNetns {
        let path = format!("/var/run/netns/{netns}");
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns(2) on a descriptor we own, for this thread only (a network
            // namespace is per thread); it touches no memory of ours.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            handle_tx.send(runtime.handle().clone()).unwrap();
            // The runtime runs every task spawned through the handle, on this thread.
            runtime.block_on(async {
                let _ = stop_rx.await;
            });
        });
        let handle = handle_rx.recv().unwrap();
        InNetns {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Runs `work` on the thread, inside the namespace.
    pub fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        self.handle.block_on(self.handle.spawn(work)).unwrap()
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
