// Validate an AsyncAPI document (a URL or a file) with the official parser: exit 1 on any
// error-level diagnostic, printing each. Usage: node asyncapi-validate.mjs <url-or-file>
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const where = process.argv[2];
const text = where.startsWith("http")
  ? await (await fetch(where)).text()
  : await readFile(where, "utf8");
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
for (const d of diagnostics) {
  const level = ["error", "warning", "info", "hint"][d.severity] ?? d.severity;
  console.log(`${level} ${d.code} ${d.path.join(".")}: ${d.message}`);
}
if (!document || errors.length) {
  console.error(`invalid: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(
  `valid AsyncAPI ${document.version()}: ${document.channels().length} channels, ` +
    `${document.operations().length} operations, ${document.messages().length} messages`,
);
