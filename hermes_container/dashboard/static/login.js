// Sign-in forms of the login page: the login token (HERMES_DASHBOARD_AUTH=token) and the
// basic login. The sign-in link carries the token in the URL fragment, which the browser
// never sends; this script takes it from there, wipes it from the address bar and
// history, and posts it with the page's CSRF token.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");

  function post(url, body, form, error) {
    error.hidden = true;
    body.next = form.dataset.next || "/";
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (response.ok && answer.ok) {
          window.location.replace(answer.next || "/");
          return;
        }
        error.textContent = response.status === 429
          ? "Too many attempts. Wait a little and try again."
          : (answer.detail || "Sign-in failed.");
        error.hidden = false;
      });
    }, function () {
      error.textContent = "The dashboard could not be reached.";
      error.hidden = false;
    });
  }

  var tokenForm = document.getElementById("token-login");
  if (tokenForm) {
    var tokenInput = document.getElementById("login-token");
    var tokenError = document.getElementById("token-error");
    var signIn = function (token) {
      post("/auth/token", { token: token }, tokenForm, tokenError);
    };
    tokenForm.addEventListener("submit", function (event) {
      event.preventDefault();
      if (tokenInput.value.trim()) signIn(tokenInput.value.trim());
    });
    var match = /^#token=([A-Za-z0-9_-]+)$/.exec(window.location.hash);
    if (match) {
      history.replaceState(null, "", window.location.pathname + window.location.search);
      signIn(match[1]);
    }
  }

  var basicForm = document.getElementById("basic-login");
  if (basicForm) {
    basicForm.addEventListener("submit", function (event) {
      event.preventDefault();
      post("/auth/basic", {
        user: document.getElementById("basic-user").value,
        password: document.getElementById("basic-password").value,
      }, basicForm, document.getElementById("basic-error"));
    });
  }
})();
