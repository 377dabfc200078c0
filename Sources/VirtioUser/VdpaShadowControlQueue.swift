import Vhost

/// vhost-vdpa's control queue mirror is the device's shadow control queue.
extension VhostVdpaShadowControlQueue: ShadowControlQueue {}
