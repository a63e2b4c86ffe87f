"""The Explorer's panels; each records engine and UI events and draws them, throttled by the Controller."""
