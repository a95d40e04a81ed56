// An account's session on the operator's and observer's pages: the log-in (and, where the
// page has one, the register) form, the log-out button, the token kept by api.js, resuming
// a saved session when the page opens, and the end of a session the server no longer knows.
//
// Resuming: only the server saying the session is over (401) logs out. A network error
// minutes before a show keeps the token and tries again in 5 s, so an operator whose Wi-Fi
// blinked does not have to find their password.
//
// The page says what logging in and out mean for it (`onLogin(me)`, `onLogout()`); the
// session owns the token and when those are called.

import { api, accountToken, setAccountToken, ApiError } from './api.js';

const RESUME_RETRY_MS = 5000;
/** The key of the resume's own error (cleared when it succeeds; see Messages.clear). */
const RESUME_ERROR = 'session';

export class Session {
  /**
   * @param {object} o
   * @param {import('./errors.js').Messages} o.messages
   * @param {HTMLFormElement} o.loginForm      fields named `login` and `password`
   * @param {HTMLFormElement} [o.registerForm] fields `login`, `password`, `display_name`
   * @param {HTMLElement} o.logoutButton
   * @param {(me: object) => Promise<void>|void} o.onLogin  `me` is GET /api/auth/me
   * @param {() => void} o.onLogout
   * @param {object} [o.words]  the page's own words: {loggedIn: 'Logged in', logIn: 'log in'}
   */
  constructor({ messages, loginForm, registerForm = null, logoutButton, onLogin, onLogout, words = {} }) {
    Object.assign(this, { messages, loginForm, registerForm, logoutButton, onLogin, onLogout });
    this.words = { loggedIn: 'Logged in', loggedOut: 'Logged out', logIn: 'log in', ...words };
    /** GET /api/auth/me while logged in ({user, grants}), else null. */
    this.me = null;
    this.resumeTimer = null;
    messages.onUnauthorized = () => {
      if (!this.me) return false;
      this.expired();
      return true;
    };
    loginForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const f = e.target;
      this.enterWith('/api/auth/login', { login: f.elements.login.value.trim(), password: f.elements.password.value }, f,
        (s) => `${this.words.loggedIn} as ${s.user.display_name || s.user.login}.`);
    });
    registerForm?.addEventListener('submit', (e) => {
      e.preventDefault();
      const f = e.target;
      const body = { login: f.elements.login.value.trim(), password: f.elements.password.value };
      const name = f.elements.display_name?.value.trim();
      if (name) body.display_name = name;
      this.enterWith('/api/auth/register', body, f, (s) => `Account ${s.user.login} created; you are ${this.words.loggedIn.toLowerCase()}.`);
    });
    logoutButton.addEventListener('click', () => this.logout());
  }

  /** At page start: resumes the saved session, or shows the log-in form. */
  start() {
    if (accountToken()) this.resume();
    else this.out();
  }

  async enterWith(path, body, form, okText) {
    this.messages.clear();
    await this.messages.run(async () => {
      const session = await api('POST', path, body);
      setAccountToken(session.token);
      form.elements.password.value = '';
      await this.enter();
      return session;
    }, okText);
  }

  /** The token is saved: learn who we are and let the page in. */
  async enter() {
    clearTimeout(this.resumeTimer);
    this.me = await api('GET', '/api/auth/me');
    await this.onLogin(this.me);
  }

  async resume() {
    try {
      await this.enter();
      this.messages.clear(RESUME_ERROR);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        this.out(`Your session has ended; please ${this.words.logIn} again.`);
      } else {
        this.messages.error(err, `Checking the session (retrying in ${RESUME_RETRY_MS / 1000} s)`, RESUME_ERROR);
        this.resumeTimer = setTimeout(() => this.resume(), RESUME_RETRY_MS);
      }
    }
  }

  /** The server no longer knows our token (a 401 to some action). */
  expired() {
    this.out();
    this.messages.error(new Error(`Your session has ended; please ${this.words.logIn} again.`));
  }

  async logout() {
    try {
      await api('POST', '/api/auth/logout');
    } catch {
      // the token is forgotten either way
    }
    this.out(`${this.words.loggedOut}.`);
  }

  /** Forgets the token and shows the log-in form; `message` goes on the status line. */
  out(message) {
    clearTimeout(this.resumeTimer);
    setAccountToken(null);
    this.me = null;
    this.onLogout();
    if (message) this.messages.say(message);
  }
}
