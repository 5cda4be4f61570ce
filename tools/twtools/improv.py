"""Improv Wi-Fi serial frames (version 1), host side: build, find in a byte stream, and say in words.

Frame: ``IMPROV`` + version 0x01 + type + length + data + checksum (low 8 bits of the sum of all the
previous bytes). See docs of improv-wifi.com (serial) and /work/shared/reference/improv-serial.md.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER = b"IMPROV"
VERSION = 1

TYPE_CURRENT_STATE = 0x01
TYPE_ERROR_STATE = 0x02
TYPE_RPC_COMMAND = 0x03
TYPE_RPC_RESULT = 0x04

STATES = {0x02: "ready (authorized)", 0x03: "provisioning", 0x04: "provisioned"}
ERRORS = {
    0x00: "none",
    0x01: "invalid RPC packet",
    0x02: "unknown RPC command",
    0x03: "unable to connect",
    0xFF: "unknown error",
}
CMD_WIFI_SETTINGS = 0x01
CMD_CURRENT_STATE = 0x02
CMD_DEVICE_INFO = 0x03
CMD_SCAN = 0x04
COMMANDS = {
    CMD_WIFI_SETTINGS: "send Wi-Fi settings",
    CMD_CURRENT_STATE: "request current state",
    CMD_DEVICE_INFO: "device info",
    CMD_SCAN: "scanned networks",
}
MIN_FRAME = len(HEADER) + 4  # header, version, type, length, checksum (no data)


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def frame(ftype: int, data: bytes = b"") -> bytes:
    body = HEADER + bytes([VERSION, ftype, len(data)]) + data
    return body + bytes([checksum(body)])


def strings(items: list[str]) -> bytes:
    out = bytearray()
    for s in items:
        raw = s.encode()
        out += bytes([len(raw)]) + raw
    return bytes(out)


def rpc_command(command: int, payload: bytes = b"") -> bytes:
    return frame(TYPE_RPC_COMMAND, bytes([command, len(payload)]) + payload)


def wifi_settings(ssid: str, password: str) -> bytes:
    return rpc_command(CMD_WIFI_SETTINGS, strings([ssid, password]))


def rpc_result(command: int, items: list[str]) -> bytes:
    payload = strings(items)
    return frame(TYPE_RPC_RESULT, bytes([command, len(payload)]) + payload)


@dataclass(frozen=True)
class Frame:
    type: int
    data: bytes
    checksum_ok: bool

    def describe(self) -> str:
        """One line in plain words; a Wi-Fi password is never shown."""
        if not self.checksum_ok:
            return f"frame with a bad checksum (type {self.type:#04x}, {len(self.data)} data bytes)"
        d = self.data
        if self.type == TYPE_CURRENT_STATE and len(d) == 1:
            return "state: " + STATES.get(d[0], f"unknown ({d[0]:#04x})")
        if self.type == TYPE_ERROR_STATE and len(d) == 1:
            return "error: " + ERRORS.get(d[0], f"unknown ({d[0]:#04x})")
        if self.type in (TYPE_RPC_COMMAND, TYPE_RPC_RESULT) and len(d) >= 2:
            cmd = COMMANDS.get(d[0], f"command {d[0]:#04x}")
            items = parse_strings(d[2 : 2 + d[1]])
            if self.type == TYPE_RPC_COMMAND:
                if d[0] == CMD_WIFI_SETTINGS and items:
                    return f"command: {cmd}: ssid {items[0]!r}, password ***"
                return f"command: {cmd}"
            if d[0] == CMD_SCAN and not items:
                return f"result ({cmd}): end of list"
            return f"result ({cmd}): " + (", ".join(items) if items else "(empty)")
        return f"frame type {self.type:#04x}: {d.hex(' ')}"


def parse_strings(data: bytes) -> list[str]:
    out = []
    i = 0
    while i < len(data):
        n = data[i]
        out.append(data[i + 1 : i + 1 + n].decode("utf-8", "replace"))
        i += 1 + n
    return out


def parse_at(buf: bytes, start: int) -> tuple[Frame | None, int]:
    """Try to read a frame at ``buf[start:]`` (which begins with ``IMPROV``).

    Returns (frame, end) when complete; (None, -1) when more bytes are needed; (None, 0) when this is not
    an Improv v1 frame after all (the bytes are ordinary text).
    """
    if len(buf) - start < len(HEADER) + 3:
        return None, -1
    if buf[start + 6] != VERSION or buf[start + 7] not in (1, 2, 3, 4):
        return None, 0
    length = buf[start + 8]
    end = start + 9 + length + 1
    if len(buf) < end:
        return None, -1
    body = buf[start : end - 1]
    return Frame(buf[start + 7], bytes(buf[start + 9 : end - 1]), checksum(body) == buf[end - 1]), end
