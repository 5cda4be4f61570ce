// ESP Web Tools' Improv library (improv-wifi-serial-sdk) on a serial port from Node, as the browser
// runs it on a Web Serial port: `node improv.mjs PORT [SSID PASSWORD]`. Prints one JSON line: the
// state and info from initialize(), the URL, and the outcome of provision() when SSID is given.
// The Web Serial port is a small adapter: { readable, writable } web streams over the tty.
import { register } from "node:module";
import fs from "node:fs";
import tty from "node:tty";

register("./resolve.mjs", import.meta.url);
const { ImprovSerial } = await import("improv-wifi-serial-sdk/dist/serial.js");

const [path, ssid, password] = process.argv.slice(2);
const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
const input = new tty.ReadStream(fd);
input.setRawMode(true);
const port = {
  readable: new ReadableStream({
    start(controller) {
      input.on("data", (d) => controller.enqueue(new Uint8Array(d)));
      input.on("end", () => controller.close());
    },
    cancel() {
      input.pause();
    },
  }),
  writable: new WritableStream({
    write(chunk) {
      fs.writeSync(fd, chunk);
    },
  }),
};
const logger = {
  log: (...a) => console.error(...a),
  error: (...a) => console.error(...a),
  debug: () => {},
};

const out = {};
const improv = new ImprovSerial(port, logger);
try {
  out.info = await improv.initialize(5000);
  out.state = improv.state;
  out.url = improv.nextUrl ?? null;
  if (ssid !== undefined) {
    try {
      await improv.provision(ssid, password, 60000);
      out.provisioned = true;
      out.state = improv.state;
      out.url = improv.nextUrl ?? null;
    } catch (e) {
      out.provisioned = false;
      out.error = String(e);
      out.state = improv.state;
    }
  }
} catch (e) {
  out.failed = String(e);
}
console.log(JSON.stringify(out));
process.exit(0);
