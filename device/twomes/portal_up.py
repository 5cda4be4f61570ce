# Bringing the setup access point up and down: AP, captive DNS, HTTP server, request buffer. Used once
# at each end of the portal phase, so twomes.portal imports it for that and drops it again: none of this
# code is in the heap while requests are served.
import asyncio

from micropython import const

from twomes.log import log

_HEAD_MAX = const(1536)  # = twomes.portal's request head bound (the buffer's size is the bound)


async def start(p):
    board = p.board
    ap = board.ap
    name = p.ident.name
    ap.active(True)
    if p.cfg.ap_open:
        ap.config(essid=name, authmode=getattr(board.network, "AUTH_OPEN", 0))
    else:
        ap.config(
            essid=name,
            password=p.ident.ap_password,
            authmode=getattr(board.network, "AUTH_WPA2_PSK", 3),
        )
    ip = board.ap.ifconfig()[0]  # 192.168.4.1 on the chip; loopback on the virtual board
    port = p.cfg.portal_port or 80
    host = ip if port == 80 else "%s:%d" % (ip, port)
    p.origin = "http://" + host
    p.hosts = (host, ip) if port == 80 else (host,)
    p._last = board.ticks_ms()
    if p._buf is None:
        p._buf = bytearray(_HEAD_MAX)
    from twomes import captive_dns

    try:
        p._dns = captive_dns.start(ip, p.cfg.dns_port or 53)
        p._server = await asyncio.start_server(p._conn, ip, port, backlog=4)
        p._reaper = asyncio.create_task(p.reap())
    except BaseException:
        await stop(p)
        raise
    log(
        "portal",
        "access point %r up (%s), page %s/" % (name, "open" if p.cfg.ap_open else "WPA2", p.origin),
    )


async def stop(p):
    srv = p._server
    p._server = None
    if srv is not None:
        srv.close()
    for t in [r.task for r in p._reqs] + [p.job, p._reaper]:
        if t is not None:
            t.cancel()
    for _ in range(20):  # let the cancelled handlers run their `finally` (sockets closed)
        if not p._reqs:
            break
        await asyncio.sleep(0.01)
    if srv is not None:
        try:
            await srv.wait_closed()
        except Exception:  # noqa: BLE001 - also an accept loop that died of its own error: closed either way
            pass
    dns = p._dns
    p.job = p._dns = p._buf = p._reaper = None
    if dns is not None:
        dns.cancel()
        try:
            await dns  # its `finally` closes the socket
        except asyncio.CancelledError:
            pass
    try:
        p.board.ap.active(False)
    except OSError:
        pass
    log("portal", "access point down")
