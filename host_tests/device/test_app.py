# The app's watch loop (LED, button, time up) driven by a clock the test owns: App.step(now) is what
# the loop runs every 50 ms, so nothing here depends on wall-clock luck. Both runtimes.
import os

import support
from twomes import config, identity, store, wifi
from twomes.app import STATES, App


class Board:
    """Just what step() touches: the clock, the LED and the button."""

    def __init__(self):
        self.now = 0
        self.led = []  # every change: (ticks, on)
        self.pressed = False

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, b):
        return a + b

    def mac(self):
        return b"\x24\x6f\x28\xd3\xad\x48"

    def led_set(self, on):
        self.led.append((self.now, on))

    def button_pressed(self):
        return self.pressed


def _app(state="portal"):
    import vesp32

    d = support.new_board()
    os.chdir(d)
    support.logged().clear()
    b = Board()
    cfg = config.defaults()
    st = store.Store(vesp32.NVS("twomes"))
    app = App(b, cfg, st, identity.load(st, b.mac(), cfg, os.urandom))
    app.state = state
    return app, b


def _run(app, b, until, step=50):
    while b.now < until:
        b.now += step
        app.step(b.now)


def _lit_at(b, t):
    on = None
    for at, v in b.led:
        if at <= t:
            on = v
    return on


def test_every_state_has_an_led_pattern():
    # (its owner, the table's comment: host_tests/test_device_states.py)
    for state in STATES:
        pattern = STATES[state]
        assert pattern is None or (len(pattern) % 2 == 0 and sum(pattern) > 0), state


def test_led_blinks_the_states_pattern_and_is_solid_when_running():
    app, b = _app("portal")  # 500 ms on, 500 ms off
    _run(app, b, 3000)
    assert _lit_at(b, 250) is True and _lit_at(b, 750) is False and _lit_at(b, 2250) is True
    assert [t for t, v in b.led] == [50, 500, 1000, 1500, 2000, 2500, 3000]  # only when the pattern says
    app.state = "running"
    _run(app, b, 5000)
    assert _lit_at(b, 5000) is True and len([1 for t, v in b.led if t > 3000 and not v]) == 0


def test_short_press_shows_the_state_and_changes_nothing():
    app, b = _app("running")
    wifi.save(app.st, "home", "12345678")
    b.pressed = True
    _run(app, b, 400)
    b.pressed = False
    _run(app, b, 600)
    assert [ln for ln in support.logged() if "button: state running" in ln]
    assert wifi.saved(app.st) == ("home", "12345678") and not app._stop


def test_a_single_noisy_poll_is_not_a_press():
    app, b = _app("running")
    b.pressed = True
    _run(app, b, 50)
    b.pressed = False
    _run(app, b, 500)
    assert not [ln for ln in support.logged() if "button:" in ln]


def test_long_press_forgets_wifi_with_the_led_off_while_held():
    app, b = _app("running")
    wifi.save(app.st, "home", "12345678")
    app.st.put(store.SESSION, "Mw.session-1")
    app.st.commit()
    b.pressed = True
    _run(app, b, 4000)
    assert _lit_at(b, 3900) is False  # past 3 s: LED off, the person knows to let go
    b.pressed = False
    _run(app, b, 4100)
    assert wifi.saved(app.st) is None and app.st.get(store.SESSION) == "Mw.session-1"
    assert app.state == "resetting" and app._stop


def test_a_long_press_restarts_even_without_heap_to_count_the_good_boot():
    """A person's long press forgets Wi-Fi and restarts; when the boot-loop counter's module finds no
    heap (a MemoryError), the restart still happens (before: the poll was skipped with Wi-Fi already
    forgotten and the app ran on), and the log says the boot was not counted."""
    import twomes.app as appmod

    app, b = _app("running")
    wifi.save(app.st, "home", "12345678")
    real = appmod.boot_loop
    calls = []

    def boot_loop(good=False):
        calls.append(good)
        raise MemoryError("memory allocation failed, allocating 464 bytes")

    appmod.boot_loop = boot_loop
    try:
        b.pressed = True
        _run(app, b, 4000)
        b.pressed = False
        _run(app, b, 4100)
    finally:
        appmod.boot_loop = real
    assert calls == [True] and wifi.saved(app.st) is None
    assert app._stop and app.state == "resetting"
    assert [ln for ln in support.logged() if "no heap to count this boot as good" in ln]


def test_very_long_press_is_a_factory_reset_with_a_flicker():
    app, b = _app("running")
    wifi.save(app.st, "home", "12345678")
    token = app.ident.activation_token
    b.pressed = True
    _run(app, b, 10500)
    flips = [t for t, v in b.led if t > 10000]
    assert len(flips) >= 8  # 50 ms on / 50 ms off: a change at every poll
    b.pressed = False
    _run(app, b, 10600)
    assert wifi.saved(app.st) is None and app.st.get(store.ACT_TOKEN) is None
    assert app._stop and token


def test_a_good_boot_resets_the_boot_loop_counter_and_safe_mode_ends():
    app, b = _app("running")
    os.mkdir("ota")
    with open("ota/boots", "w") as f:
        f.write("3")
    _run(app, b, 59000)
    assert os.stat("ota/boots")
    _run(app, b, 61000)
    try:
        os.stat("ota/boots")
        raise AssertionError("counter kept")
    except OSError:
        pass
    app.safe = True
    _run(app, b, 599000)
    assert not app._stop
    _run(app, b, 601000)
    assert app._stop  # safe mode: a normal restart after 10 minutes


def test_the_watch_loop_outlives_a_full_heap():
    """A poll that finds no heap (MemoryError from the button, the LED or the good boot's counter:
    setup mode's portal under attack can fill the heap for a moment) is skipped, the loop goes on and
    the good boot is counted at the next poll that has heap; the skipped polls are logged after."""
    import twomes.app as appmod

    class Starved(Board):
        def __init__(self, app_box):
            Board.__init__(self)
            self.app_box = app_box
            self.polls = 0

        def ticks_ms(self):
            return self.now

        def button_pressed(self):
            self.polls += 1
            self.now += 1000  # the loop's own sleep is real time (50 ms); its clock is ours
            if self.polls == 12:
                self.app_box[0]._stop = True
            if self.polls in (2, 3):
                raise MemoryError("memory allocation failed, allocating 32 bytes")
            return False

    box = [None]
    app, _ = _app("portal")
    b = Starved(box)
    app2 = App(b, app.cfg, app.st, app.ident)
    app2.state = "portal"
    box[0] = app2
    app2._t0 = -55000  # the good boot is due within the first polls
    real = appmod.boot_loop
    calls = []

    def boot_loop(good=False):
        calls.append(good)
        if len(calls) == 1:
            raise MemoryError("memory allocation failed, allocating 464 bytes")
        return real(good)

    appmod.boot_loop = boot_loop
    try:
        support.run(app2.watch())
    finally:
        appmod.boot_loop = real
    assert b.polls == 12 and app2._stop
    assert calls == [True, True] and app2._good  # failed once, counted at the next poll
    assert [ln for ln in support.logged() if "polls of the LED and button skipped: no heap" in ln]


def test_a_poll_of_the_watch_loop_allocates_nothing():
    """What the watch loop does every 50 ms (step(): the LED pattern, the button, the time up, and its
    sleep) takes no heap on MicroPython, so a full heap cannot starve it (a board's own calls aside:
    the chip's Pin calls allocate nothing). CPython: the same polls run, nothing is measured."""
    import gc
    import sys

    from twomes import hw

    class Quiet(Board):
        def led_set(self, on):
            self.on = on  # (the base Board records every change in a list: that allocates)

    app, _ = _app("portal")
    b = Quiet()
    app2 = App(b, app.cfg, app.st, app.ident)
    app2.state = "portal"
    app2._good = True  # the good boot's counter (a module loaded once per boot) is another test's
    mp = sys.implementation.name == "micropython"
    for _ in range(3):  # warm: the first poll sets the LED's state
        b.now += 50
        app2.step(b.now)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc() if mp else 0
        for _ in range(400):  # 20 s of polls: the LED changes 40 times
            b.now += 50
            app2.step(b.now)
            if mp:
                hw.sleep_ms(50)  # the loop's sleep (not awaited here: only its making counts)
        used = gc.mem_alloc() - before if mp else 0
    finally:
        gc.enable()
    assert used == 0, used


def test_setup_mode_and_the_online_phase_never_share_a_boot():
    """Setup mode ended with "retry" (nobody came; the saved network is tried again) and the saved
    network works: the app restarts instead of going online in this boot, whose heap keeps setup's
    names for good (docs/heap.md, the qstr pool). Without setup mode in between it goes online at once;
    when the online phase ends "offline" (Wi-Fi gone) it restarts instead of opening setup mode."""

    class Flow(App):
        def __init__(self, b, cfg, st, ident, joins):
            App.__init__(self, b, cfg, st, ident)
            self.joins = joins
            self.phases = []
            self.update = "none"

        async def join(self, creds):
            return self.joins.pop(0)

        async def setup(self, saved):
            self.phases.append("setup")
            return "retry"

        async def online(self, creds):
            self.phases.append("online")
            return "offline"

        async def update_boot(self):
            return self.update

        def listen(self):
            class _Task:
                def cancel(self):
                    pass

            return _Task()

    app, b = _app()
    wifi.save(app.st, "home", "correct horse")
    retried = Flow(b, app.cfg, app.st, app.ident, [wifi.NOT_FOUND, wifi.JOINED])
    support.run(retried.flow())
    assert retried.phases == ["setup"] and retried._stop and retried._crash is None
    assert [ln for ln in support.logged() if "the saved network works again: restarting" in ln]
    support.logged().clear()
    direct = Flow(b, app.cfg, app.st, app.ident, [wifi.JOINED, wifi.NOT_FOUND])
    support.run(direct.flow())
    assert direct.phases == ["online"] and direct._stop and direct._crash is None  # no setup after it
    assert [ln for ln in support.logged() if "Wi-Fi gone: restarting" in ln]
    # a failed update boot: the online phase in the next boot, from a clean heap (a good boot)
    support.logged().clear()
    failed = Flow(b, app.cfg, app.st, app.ident, [wifi.JOINED])
    failed.update = "failed"
    support.run(failed.flow())
    assert failed.phases == [] and failed._stop and failed._crash is None
    assert [ln for ln in support.logged() if "restarting to go online from a clean heap" in ln]


def test_joining_shows_the_ssid_without_its_control_characters():
    """The SSID came from a phone: a newline or an escape sequence in it cannot forge a console line."""

    class Net:
        STAT_GOT_IP = 3
        STAT_WRONG_PASSWORD = 202
        STAT_NO_AP_FOUND = 201

    class Sta:
        def active(self, on):
            pass

        def disconnect(self):
            pass

        def connect(self, ssid, password):
            pass

        def status(self):
            return Net.STAT_NO_AP_FOUND

    app, b = _app()
    b.network, b.sta = Net, Sta()
    forged = "home\n[   1.000] firmware: running 9.9.9, confirmed\x1b[2J"
    assert support.run(app.join((forged, "pw"))) == wifi.NOT_FOUND
    said = "\n".join(support.logged())
    assert "\x1b" not in said and "\n[   1.000] firmware" not in said
    assert "joining home?[   1.000] firmware: running 9.9.9, confirmed?[2J" in said
    assert "wifi: home?[   1.000] firmware: running 9.9.9, confirmed?[2J: " in said
    assert app.wifi_ssid == forged  # what the status page shows (JSON-escaped there) is the SSID itself
