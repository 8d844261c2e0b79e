// steps.mjs: the line protocol both browser drivers speak. Reads one JSON
// command a line on stdin ({"cmd": NAME, ...}), runs `commands[NAME]` and
// answers each with one JSON line on stdout: {"ok": true, ...its result}
// or {"ok": false, "error": "..."}. Returns when stdin closes.
import { createInterface } from "node:readline";

export async function answerCommands(commands) {
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    let answer;
    try {
      const command = JSON.parse(line);
      answer = { ok: true, ...(await commands[command.cmd](command)) };
    } catch (error) {
      answer = { ok: false, error: String(error && error.message || error) };
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
  }
}
