// Bundles GraphiQL (web/graphiql/main.jsx) into actstore/api/static/graphiql/ with esbuild:
// graphiql.js (one minified IIFE) and graphiql.css. Run through `make assets`.
import { build } from "esbuild";
import { mkdirSync, writeFileSync, readFileSync } from "node:fs";

const out = new URL("../actstore/api/static/graphiql/", import.meta.url).pathname;
mkdirSync(out, { recursive: true });
await build({
  entryPoints: { graphiql: new URL("./graphiql/main.jsx", import.meta.url).pathname },
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  outdir: out,
  legalComments: "linked",
  loader: { ".svg": "dataurl", ".woff": "dataurl", ".woff2": "dataurl", ".ttf": "dataurl" },
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "info",
});
// What went into the bundle, for the README and the licence notice.
const lock = JSON.parse(readFileSync(new URL("./package-lock.json", import.meta.url)));
const wanted = Object.keys(JSON.parse(readFileSync(new URL("./package.json", import.meta.url))).dependencies);
const lines = wanted.map((name) => `${name}@${lock.packages[`node_modules/${name}`].version}`);
writeFileSync(out + "VERSIONS.txt", "Built by `make assets` (web/build.mjs, esbuild) from web/package-lock.json:\n" + lines.join("\n") + "\n");
