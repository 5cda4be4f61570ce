# Retry delays: exponential, capped, scaled by a fixed per-device factor in [0.75, 1.25) taken from
# the MAC, so a fleet that lost its server does not come back in step. Loaded by App.backoff() for the
# online phase and the update boot only.


class Backoff:
    def __init__(self, base_s, max_s, mac):
        self.base = base_s
        self.max = max_s
        self.factor = 0.75 + ((mac[4] << 8 | mac[5]) % 1000) / 2000
        self.n = 0

    def next_s(self):
        d = min(self.max, self.base * (1 << min(self.n, 16)))
        self.n += 1
        return d * self.factor

    def reset(self):
        self.n = 0
