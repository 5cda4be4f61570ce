# Starts the app; everything else lives in the twomes package.
import twomes.app

twomes.app.main()
