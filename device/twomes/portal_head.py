# The head of the setup form with its inline CSS (no JavaScript, nothing external). Written before the
# body and dropped again before twomes.portal_page comes in: the style is the biggest constant of the
# form, and both modules in the heap at once would be the portal's biggest moment.


def head(w):
    """Write the form page's head up to <main> to stream `w`."""
    w.write(
        b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Wi-Fi setup</title>'
        b'<meta name="viewport" content="width=device-width,initial-scale=1">'
    )
    w.write(
        b"<style>body{margin:0;font:16px/1.4 system-ui,sans-serif;background:#eef1f5;color:#18212d}"
        b"main{max-width:30em;margin:auto;padding:1em}h1{font-size:1.4em;margin:.3em 0 0}h2{font-size:1.1em}"
        b".s{color:#5a6676;font-size:.9em}a{color:#0b63c4}"
        b".c{background:#fff;border-radius:14px;padding:.2em 1em 1em;margin:1em 0;box-shadow:0 1px 3px #0002}"
        b".n{display:flex;align-items:center;gap:.7em;padding:.7em 0;border-bottom:1px solid #e5e9ef}"
        b".n span{flex:1;overflow-wrap:anywhere}.n input{width:1.2em;height:1.2em;margin:0}"
        b".f{display:block;font-weight:600;margin-top:.8em}"
    )
    w.write(
        b".t{display:block;width:100%;box-sizing:border-box;font:inherit;padding:.6em;margin:.3em 0;"
        b"border:1px solid #bcc5d1;border-radius:9px}"
        b"button{width:100%;font:inherit;font-weight:600;padding:.8em;margin-top:1em;border:0;"
        b"border-radius:9px;background:#0b63c4;color:#fff}"
        b".g{width:28px;height:6px;background:#cdd4de;border-radius:3px}.g i{display:block;height:6px;"
        b"background:#18212d;border-radius:3px}.lk,.op{width:10px;height:8px}"
        b".lk{background:#5a6676;border-radius:2px;position:relative;margin-top:4px}.lk:before{content:'';"
        b"position:absolute;left:2px;top:-6px;width:3px;height:5px;border:1.5px solid #5a6676;"
        b"border-bottom:0;border-radius:4px 4px 0 0}"
        b".m{border-radius:10px;padding:.8em 1em;margin:1em 0}.ok{background:#dff5e6}.bad{background:#fde5e5}"
        b".w{background:#e3eefc}</style></head><body><main>"
    )
