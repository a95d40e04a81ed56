// What the operator's and observer's pages tell their user: one error region (role=alert)
// and one status line (role=status), and `run`, which does an action and reports how it
// went. A 401 from any action means the account's session is over: the page's session
// (session.js) is told, once, instead of the user reading "unauthorized" on every button.

import { ApiError } from './api.js';

/** One line for a failure: the server's sentence and its code, or the error's message. */
export function describe(err) {
  if (err instanceof ApiError) {
    return `${err.message || 'request failed'} (${err.code}${err.status ? ', HTTP ' + err.status : ''})`;
  }
  return String(err?.message ?? err);
}

export class Messages {
  /**
   * @param {object} o
   * @param {HTMLElement} o.errorBox   the error region (the pages name it differently)
   * @param {HTMLElement} o.statusLine the status line
   */
  constructor({ errorBox, statusLine }) {
    this.errorBox = errorBox;
    this.statusLine = statusLine;
    /** Set by the session: called on a 401 while logged in; returns true when it took over. */
    this.onUnauthorized = () => false;
  }

  /** Says how something went; a success clears the last error, which no longer holds. */
  say(text) {
    this.clear();
    this.statusLine.textContent = text;
  }

  /** Clears the error shown; with `key`, only the error shown with that key (a background
   * job clearing its own failure leaves the user's last error alone). */
  clear(key) {
    if (key !== undefined && this.shownKey !== key) return;
    this.errorBox.textContent = '';
    this.shownKey = undefined;
  }

  /** Shows a failure, `what` naming what was being done; `key` as for `clear`. */
  error(err, what, key) {
    if (err instanceof ApiError && err.status === 401 && this.onUnauthorized()) return;
    const p = document.createElement('p');
    p.textContent = (what ? what + ': ' : '') + describe(err);
    this.errorBox.replaceChildren(p);
    this.shownKey = key;
  }

  /**
   * Runs an action, reporting its failure in the error region; resolves to its value, or to
   * undefined when it failed. `okText` (a string, or a function of the value) is said on
   * success.
   */
  async run(action, okText, what) {
    try {
      const value = await action();
      if (okText) this.say(typeof okText === 'function' ? okText(value) : okText);
      return value;
    } catch (err) {
      this.error(err, what);
      return undefined;
    }
  }

  /** An event handler that runs `fn(event)` as `run` does, after clearing the last error. */
  handler(what, fn, okText) {
    return (...args) => {
      this.clear();
      return this.run(() => fn(...args), okText, what);
    };
  }
}
