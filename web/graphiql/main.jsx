// GraphiQL for actstore, bundled with its dependencies so the page loads nothing from
// another host. The page (actstore/api/static/graphiql/index.html) has <div id="graphiql">.
import React from "react";
import { createRoot } from "react-dom/client";
import { GraphiQL } from "graphiql";
import { explorerPlugin } from "@graphiql/plugin-explorer";
import { createGraphiQLFetcher } from "@graphiql/toolkit";
import "graphiql/graphiql.css";
import "@graphiql/plugin-explorer/dist/style.css";

// The endpoint is the page's own URL (/graphql): GET with Accept: text/html is this page,
// POST with JSON runs the query.
const fetcher = createGraphiQLFetcher({ url: window.location.pathname });
const explorer = explorerPlugin();

const DEFAULT_QUERY = `# actstore: press the run button (or Ctrl-Enter) to list the stored models.
# A token for mutations goes in the Headers tab: {"Authorization": "Bearer <token>"}
{
  models { key architecture nLayers dModel source datasets promptCount }
  datasets { name promptCount hasLabels }
}
`;

createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, {
    fetcher,
    plugins: [explorer],
    defaultQuery: DEFAULT_QUERY,
    shouldPersistHeaders: false,
  }),
);
