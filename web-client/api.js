// The C3S HTTP API from the browser: JSON in and out, the account token from localStorage,
// every failure as an Error carrying the server's {error, message}.

const TOKEN_KEY = 'c3s.account_token';

export function accountToken() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setAccountToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  /** `body`: the whole JSON error (a stale command's 409 carries `current`, the state now). */
  constructor(status, code, message, body = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

async function failure(res) {
  let body = {};
  try {
    body = await res.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  return new ApiError(res.status, body.error ?? 'http_' + res.status, body.message ?? res.statusText, body);
}

/** fetch(), its failures to reach the server said as an ApiError (status 0) in words: a
 * browser's own ("Failed to fetch", "Load failed", "NetworkError when...") differ and say
 * little. An abort the caller asked for stays what it is. */
async function send(path, init) {
  try {
    return await fetch(path, init);
  } catch (err) {
    if (err?.name === 'TimeoutError') throw new ApiError(0, 'timeout', 'the server did not answer in time');
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', 'the server could not be reached');
  }
}

/** The Authorization header of the saved account, merged into `headers`. */
function withToken(headers = {}) {
  const token = accountToken();
  return token ? { ...headers, authorization: 'Bearer ' + token } : headers;
}

/**
 * fetch() with the account token, for replies that are not JSON (images, raw bytes, a
 * stream): resolves to the Response when it is a success, else throws the ApiError.
 * `init` is fetch's own (its `signal` is the caller's: a stream must not time out).
 */
export async function apiFetch(path, init = {}) {
  const res = await send(path, { ...init, headers: withToken(init.headers) });
  if (!res.ok) throw await failure(res);
  return res;
}

/** Calls the API: `api('GET', '/api/scenes')`, `api('POST', '/api/scenes', {...})`. */
export async function api(method, path, body) {
  const headers = withToken();
  let payload;
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  // a request that hangs (a dead access point) fails after 15 s instead of never
  const res = await send(path, { method, headers, body: payload, signal: AbortSignal.timeout(15000) });
  if (!res.ok) throw await failure(res);
  if (res.status === 204 || res.status === 202) return null;
  const type = res.headers.get('content-type') ?? '';
  return type.includes('json') ? res.json() : res.text();
}

/**
 * Sends a body (a File, Blob or FormData) with upload progress, which fetch cannot report.
 * `onProgress(fraction)` is called as bytes leave. Resolves to the JSON reply.
 */
export function upload(method, path, body, onProgress = () => {}, contentType) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    const token = accountToken();
    if (token) xhr.setRequestHeader('authorization', 'Bearer ' + token);
    if (contentType) xhr.setRequestHeader('content-type', contentType);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      let reply = null;
      try {
        reply = JSON.parse(xhr.responseText);
      } catch {
        // empty or not JSON
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(reply);
      } else {
        reject(new ApiError(xhr.status, reply?.error ?? 'http_' + xhr.status, reply?.message ?? xhr.statusText));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'the server could not be reached'));
    xhr.send(body);
  });
}

/** Scene id from a short key (22 characters of base64url) or a UUID. */
export function sceneIdFromKey(key) {
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(key)) return key.toLowerCase();
  if (!/^[A-Za-z0-9_-]{22}$/.test(key)) return null;
  const bin = atob(key.replace(/-/g, '+').replace(/_/g, '/') + '==');
  const hex = [...bin].map((c) => c.charCodeAt(0).toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
