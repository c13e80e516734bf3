// wallet-proxy support pages: copy buttons and local times. The one script, served from
// 'self' (the Content-Security-Policy allows no inline script and no eval).
"use strict";

(function () {
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain http on another host than localhost: no Clipboard API, the older way.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function say(button, text) {
    button.textContent = text;
    window.setTimeout(function () { button.textContent = "Copy"; }, 1500);
  }

  // The buttons are in the page hidden: without this script they would do nothing.
  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      copyText(button.dataset.copy).then(
        function () { say(button, "Copied"); },
        function () { say(button, "Copy failed"); }
      );
    });
  });

  // Every time is written in UTC; add the agent's own clock beside it.
  const local = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  document.querySelectorAll("time[datetime]").forEach(function (time) {
    const moment = new Date(time.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) {
      return;
    }
    const note = document.createElement("span");
    note.className = "local-time";
    note.textContent = " (" + local.format(moment) + " your time)";
    time.after(note);
  });
})();
