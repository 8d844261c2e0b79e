// Drives clients/herald-notifications.js for tests/sidecar/js_client.rs:
// argv: URL TOKEN [LAST_ID]. Prints one JSON line per notification, status
// and gap, and runs commands read from stdin ("stop").
import { createInterface } from "node:readline";
import { HeraldNotifications } from "../../clients/herald-notifications.js";

const [url, token, lastId] = process.argv.slice(2);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const feed = new HeraldNotifications({
  url,
  getToken: async () => token,
  minDelay: 100,
  maxDelay: 400,
  lastId: lastId === undefined ? null : Number(lastId),
  onGap: (resumed) => print({ gap: resumed }),
  onNotification: (n) => print({ notification: n }),
  onEvent: (e) => print({ event: e.type }),
  onStatus: (status, detail) => print({ status, ...detail }),
});
feed.start();
createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "stop") {
    feed.stop();
    setTimeout(() => process.exit(0), 100);
  }
});
