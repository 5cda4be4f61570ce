# Wall-clock time without NTP: the server's HTTP Date header sets it, the tick counter carries it on.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def days_from_civil(y, m, d):
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_http_date(text):
    """'Tue, 25 Nov 2026 10:00:00 GMT' -> unix seconds, or None when it is not an IMF-fixdate."""
    try:
        parts = text.split()
        day, mon, year = int(parts[1]), _MONTHS.index(parts[2]) + 1, int(parts[3])
        hh, mm, ss = [int(x) for x in parts[4].split(":")]
        if parts[5] != "GMT" or not (1 <= day <= 31 and 0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 61):
            return None
    except (ValueError, IndexError):
        return None
    return days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss


class Clock:
    def __init__(self, board):
        self._board = board
        self._base = None  # (unix seconds, ticks) of the last sync

    def sync(self, date_header):
        t = parse_http_date(date_header) if date_header else None
        if t is not None and t > 1600000000:
            self._base = (t, self._board.ticks_ms())

    def synced(self):
        return self._base is not None

    def now(self):
        """Unix seconds, or None before the first sync."""
        if self._base is None:
            return None
        return self._base[0] + self._board.ticks_diff(self._board.ticks_ms(), self._base[1]) // 1000

    def at(self, ticks):
        """Unix seconds of an earlier tick value, or None before the first sync."""
        if self._base is None:
            return None
        return self._base[0] + self._board.ticks_diff(ticks, self._base[1]) // 1000
