# Runs on the virtual board (MicroPython unix port) as its main.py: console output the app does not
# print (yet) - Improv frames, and lines a careless app might print with secrets in them - around the
# real identity code's activation line (name from the MAC, activation token kept in the simulated NVS).
import os
import sys
import time

import esp32
import network

from twomes import config, identity, store


def improv(ftype, data):
    body = b"IMPROV" + bytes([1, ftype, len(data)]) + data
    sys.stdout.buffer.write(body + bytes([sum(body) & 0xFF]) + b"\n")


def strings(items):
    out = b""
    for s in items:
        out += bytes([len(s)]) + s.encode()
    return out


cfg = config.load()
st = store.Store(esp32.NVS("twomes"))
sta = network.WLAN(network.STA_IF)
sta.active(True)
ident = identity.load(st, sta.config("mac"), cfg, os.urandom)
print("[   0.120] boot: console test script")
improv(1, bytes([2]))  # state: ready
info = strings(["Twomes", "1.0.0", "ESP32", ident.name])
improv(4, bytes([3, len(info)]) + info)  # device info
sys.stdout.write("prompt> ")  # no newline, then a frame: the frame must still be decoded
improv(2, bytes([3]))  # error: unable to connect
ten = strings(["http://x"])  # 9 bytes; with command + length: a data length of 11
improv(4, bytes([1, len(ten)]) + ten)
improv(4, bytes([1, 8]) + b"\x07http:/\n")  # a newline byte inside a frame
print('wifi: joining "HomeNet" with password="hunter2-very-secret"')
print("stored session token Mw.cHA2dGhpc2lzYXZlcnlsb25ncmFuZG9tdG9rZW4xMjM0NQ")
print('{"session_token": "MQ.Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg", "wifi_pass": "p4ssw0rd!"}')
print("http: Authorization: Bearer MQ.c2VjcmV0c2VjcmV0c2VjcmV0MTIzNDU2")
print(f"AP {ident.name} ap_password={ident.ap_password} portal http://192.168.4.1")
improv(1, bytes([4]))  # state: provisioned
print(ident.activation_line)
sys.stdout.flush()
while True:
    time.sleep(1)
