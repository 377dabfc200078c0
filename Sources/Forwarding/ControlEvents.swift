import CFerry
import VirtioUser
#if canImport(Glibc)
import Glibc
#endif

/// The one place Ferry's control thread sleeps: a poll(2) on everything that gives it work.
///
/// testpmd's main lcore blocks on its prompt while the forwarding lcores run. Ferry's control
/// thread likewise sleeps until there is something to do, rather than waking on a fixed tick:
/// the harness and many deployments share its core with another busy thread (a traffic
/// generator, a backend's lcore), and every needless wake-up preempts that thread.
///
/// What wakes it:
/// - a stop signal, SIGINT or SIGTERM, through a signalfd (when the runtime handles signals);
/// - a request from another thread, through one eventfd: `requestStop`, `requestPoolGrowth`,
///   and the buffer pool falling below its low water;
/// - a backend connection hanging up (POLLRDHUP/POLLHUP; POLLIN is not asked for, so bytes a
///   backend sends unasked do not wake it);
/// - a server-mode listener turning readable, when a backend connects again;
/// - the timeout the caller computes from its timers (duration, stats_period, reconnect_ms).
final class ControlEvents {
    /// Readable when another thread asked for attention. Kept by the runtime from `init`, so a
    /// request made before `run` starts is not lost.
    let wake: EventFD?
    private let signals: Int32
    private let handleSignals: Bool

    /// What one `wait` returned.
    struct Woken {
        /// SIGINT or SIGTERM, or 0.
        var stopSignal: Int32 = 0
        /// Another thread wrote the wake eventfd.
        var requested = false
        /// Ports whose backend connection hung up.
        var hungUp: Set<Int> = []
        /// Ports whose listening socket has a backend waiting.
        var connectable: Set<Int> = []
    }

    /// `handleSignals`: SIGINT and SIGTERM are already blocked on this thread (and on the
    /// workers, which inherit the mask); take them from a signalfd.
    init(wake: EventFD?, handleSignals: Bool) {
        self.wake = wake
        self.handleSignals = handleSignals
        signals = handleSignals ? ferry_signalfd_stop_signals() : -1
        if handleSignals && signals < 0 {
            FerryLog.warning("signalfd: \(String(cString: strerror(errno))); SIGINT and SIGTERM are checked every 50 ms instead")
        }
    }

    deinit {
        if signals >= 0 { close(signals) }
    }

    /// Without an eventfd or a signalfd, some events can only be seen by looking: then no wait
    /// is longer than this.
    static let fallbackTickMs: Int32 = 50

    /// Sleeps until an event or `timeoutMs` (-1: no timeout). `linkFDs` and `listenerFDs` are
    /// (port, descriptor) pairs.
    func wait(linkFDs: [(port: Int, fd: Int32)], listenerFDs: [(port: Int, fd: Int32)],
              timeoutMs: Int32) -> Woken {
        var fds: [pollfd] = []
        fds.reserveCapacity(2 + linkFDs.count + listenerFDs.count)
        if let wake { fds.append(pollfd(fd: wake.fd, events: Int16(POLLIN), revents: 0)) }
        if signals >= 0 { fds.append(pollfd(fd: signals, events: Int16(POLLIN), revents: 0)) }
        let linkStart = fds.count
        for l in linkFDs { fds.append(pollfd(fd: l.fd, events: Int16(FERRY_POLLRDHUP), revents: 0)) }
        let listenerStart = fds.count
        for l in listenerFDs { fds.append(pollfd(fd: l.fd, events: Int16(POLLIN), revents: 0)) }

        var timeout = timeoutMs
        let blind = wake == nil || (handleSignals && signals < 0)
        if blind && (timeout < 0 || timeout > Self.fallbackTickMs) { timeout = Self.fallbackTickMs }

        var woken = Woken()
        let n = poll(&fds, nfds_t(fds.count), timeout)
        if n < 0 {
            // EINTR (a signal the runtime does not handle) or a transient error: the caller
            // loops and recomputes its timers.
            return woken
        }
        if handleSignals && signals < 0 { woken.stopSignal = Self.pendingStopSignal() }
        guard n > 0 else { return woken }
        var i = 0
        if let wake {
            if fds[i].revents != 0 { woken.requested = true; _ = wake.drain() }
            i += 1
        }
        if signals >= 0 {
            if fds[i].revents != 0 { woken.stopSignal = ferry_signalfd_read(signals) }
            i += 1
        }
        let gone = Int16(FERRY_POLLRDHUP) | Int16(POLLHUP) | Int16(POLLERR) | Int16(POLLNVAL)
        for (k, l) in linkFDs.enumerated() where fds[linkStart + k].revents & gone != 0 {
            woken.hungUp.insert(l.port)
        }
        for (k, l) in listenerFDs.enumerated() where fds[listenerStart + k].revents != 0 {
            woken.connectable.insert(l.port)
        }
        return woken
    }

    /// SIGINT and SIGTERM: what stops a run, blocked on every Ferry thread so that only the
    /// control thread takes them.
    static var stopSignals: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        return set
    }

    /// SIGINT or SIGTERM taken without waiting, or 0: the fallback when there is no signalfd.
    private static func pendingStopSignal() -> Int32 {
        var set = stopSignals
        var zero = timespec(tv_sec: 0, tv_nsec: 0)
        let sig = sigtimedwait(&set, nil, &zero)
        return sig == SIGINT || sig == SIGTERM ? sig : 0
    }
}
