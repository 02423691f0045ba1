/* The /hazards page: a click on the map, or the browser's location, fills the form's latitude
   and longitude and sends it; the answer is rendered by the server, as without JavaScript. */
(function () {
  var form = document.querySelector('.point-form');
  var lat = document.getElementById('lat'), lon = document.getElementById('lon');
  function ask(la, lo) {
    lat.value = la.toFixed(6);
    lon.value = lo.toFixed(6);
    form.submit();
  }
  var answer = document.getElementById('answer-h');
  if (answer) { answer.focus(); }

  var locate = document.getElementById('locate');
  var status = document.getElementById('locate-status');
  if (locate && navigator.geolocation) {
    locate.hidden = false;
    locate.addEventListener('click', function () {
      navigator.geolocation.getCurrentPosition(function (pos) {
        ask(pos.coords.latitude, pos.coords.longitude);
      }, function () { status.textContent = locate.dataset.failed; },
      {enableHighAccuracy: true, timeout: 15000});
    });
  }

  var el = document.getElementById('hazard-map');
  if (!el || !window.renkeiTileMap) { return; }
  var layers = JSON.parse(el.dataset.layers || '[]');
  var view = {zoom: 14};
  if (el.dataset.lat) { view.center = [Number(el.dataset.lon), Number(el.dataset.lat)]; }
  else { view.center = [134.84, 34.9]; view.zoom = 8; }
  var map = window.renkeiTileMap(el, layers, view);
  if (!map) { return; }
  if (el.dataset.lat) {
    new maplibregl.Marker({color: '#0b4f9c'}).setLngLat(view.center).addTo(map);
  }
  map.on('click', function (e) { ask(e.lngLat.lat, e.lngLat.lng); });
}());
