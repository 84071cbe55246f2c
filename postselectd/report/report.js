/* postselectd report: filters and keyboard navigation. The page reads without this
   script (a plain grid; photos open through #fN links); this adds:
   - filters by stars, label, reason, and selects-only / rejects-only;
   - arrow keys move between photos in the grid, Enter opens one;
   - in the larger view: left/right for the previous/next shown photo, Escape to close. */
(function () {
  "use strict";
  var cards = Array.prototype.slice.call(document.querySelectorAll(".card"));
  var form = document.getElementById("filters");
  var shown = document.getElementById("shown");

  function checked(name) {
    var values = {};
    form.querySelectorAll('input[name="' + name + '"]').forEach(function (box) {
      if (box.checked) { values[box.value] = true; }
    });
    return values;
  }

  function apply() {
    var show = form.querySelector('input[name="show"]:checked').value;
    var stars = checked("stars"), labels = checked("label"), reasons = checked("reason");
    var count = 0;
    cards.forEach(function (card) {
      var d = card.dataset;
      var ok = (show === "all" || d.verdict === show) && stars[d.stars] && labels[d.label] &&
        d.reasons.split("|").some(function (r) { return reasons[r]; });
      card.hidden = !ok;
      if (ok) { count += 1; }
    });
    document.querySelectorAll(".burst, .folder").forEach(function (group) {
      group.hidden = !group.querySelector(".card:not([hidden])");
    });
    shown.textContent = "Showing " + count + " of " + cards.length + " photos";
  }

  function visible() {
    return cards.filter(function (card) { return !card.hidden; });
  }

  function focusCard(card) {
    if (card) { card.querySelector(".thumb").focus(); }
  }

  function openFrame(card, replace) {
    var target = "#f" + card.id.slice(1);
    if (replace) { location.replace(target); } else { location.hash = target; }
  }

  function openDetail() {
    return document.querySelector(".detail:target");
  }

  function cardOf(detail) {
    return document.getElementById(detail.dataset.card);
  }

  // In the larger view, step through the photos the filters show.
  function step(detail, by) {
    var list = visible(), here = list.indexOf(cardOf(detail));
    if (here < 0) { here = by > 0 ? -1 : list.length; }
    var next = list[here + by];
    if (next) { openFrame(next, true); }
  }

  function closeDetail(detail) {
    location.replace("#" + detail.dataset.card);
  }

  // The card below or above: the nearest one in the next row, by position on screen.
  function vertical(card, down) {
    var box = card.getBoundingClientRect(), best = null, bestScore = Infinity;
    visible().forEach(function (other) {
      var b = other.getBoundingClientRect();
      var dy = down ? b.top - box.top : box.top - b.top;
      if (dy <= box.height / 2) { return; }
      var score = dy * 4 + Math.abs(b.left - box.left);
      if (score < bestScore) { bestScore = score; best = other; }
    });
    return best;
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) { return; }
    var detail = openDetail();
    if (detail) {
      if (event.key === "Escape") { closeDetail(detail); }
      else if (event.key === "ArrowRight") { step(detail, 1); }
      else if (event.key === "ArrowLeft") { step(detail, -1); }
      else { return; }
      event.preventDefault();
      return;
    }
    var link = event.target.closest && event.target.closest(".thumb");
    if (!link) { return; }
    var card = link.closest(".card"), list = visible(), here = list.indexOf(card), next = null;
    if (event.key === "ArrowRight") { next = list[here + 1]; }
    else if (event.key === "ArrowLeft") { next = list[here - 1]; }
    else if (event.key === "ArrowDown") { next = vertical(card, true); }
    else if (event.key === "ArrowUp") { next = vertical(card, false); }
    else if (event.key === "Home") { next = list[0]; }
    else if (event.key === "End") { next = list[list.length - 1]; }
    else { return; }
    event.preventDefault();
    if (next) { focusCard(next); }
  });

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest(".detail-nav .prev, .detail-nav .next");
    if (!link) { return; }
    event.preventDefault();
    step(link.closest(".detail"), link.classList.contains("next") ? 1 : -1);
  });

  // Move focus with the view, so a screen reader reads what opened and keys keep working;
  // while a larger view is open, the page behind it is inert (Tab stays in the view).
  var behind = Array.prototype.slice.call(document.querySelectorAll(".skip, .top, main > :not(.details)"));
  function followHash() {
    var target = location.hash && document.getElementById(location.hash.slice(1));
    var open = !!(target && target.classList.contains("detail"));
    behind.forEach(function (element) { element.inert = open; });
    if (!target) { return; }
    if (open) {
      target.querySelector("h2").focus({ preventScroll: true });
    } else if (target.classList.contains("card")) {
      focusCard(target);
    }
  }
  window.addEventListener("hashchange", followHash);

  form.hidden = false;
  form.addEventListener("change", apply);
  form.addEventListener("reset", function () { setTimeout(apply, 0); });
  apply();
  followHash();
})();
