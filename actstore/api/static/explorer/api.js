// The one way the explorer talks to the server: a GraphQL POST to /graphql (the public API).

export class ApiError extends Error {
  constructor(message, errors = []) {
    super(message);
    this.name = "ApiError";
    this.errors = errors;
  }
}

/** Run one GraphQL operation; resolves to its `data`, rejects with an ApiError that carries
 *  the API's own messages. `signal` (an AbortSignal) cancels the request. */
export async function gql(query, variables = {}, { signal, token } = {}) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }), signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`could not reach the server: ${e.message}`);
  }
  let body;
  try {
    body = await response.json();
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`the server answered HTTP ${response.status} without JSON`);
  }
  if (body.errors && body.errors.length) {
    throw new ApiError(body.errors.map((e) => e.message).join("\n"), body.errors);
  }
  if (!response.ok) throw new ApiError(`the server answered HTTP ${response.status}`);
  return body.data;
}
