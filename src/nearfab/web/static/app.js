// Open and close the release-queue sign dialogs (no framework, nothing from a CDN).
document.addEventListener("click", (event) => {
  const opener = event.target.closest("button[data-dialog]");
  if (opener) {
    document.getElementById(opener.dataset.dialog).showModal();
    return;
  }
  const closer = event.target.closest("dialog button.close");
  if (closer) closer.closest("dialog").close();
});
