// The dashboard's only script (CSP allows no inline script): submit a select's form when it changes.
document.addEventListener("change", function (event) {
  var target = event.target;
  if (target.classList && target.classList.contains("autosubmit") && target.form) {
    target.form.submit();
  }
});
