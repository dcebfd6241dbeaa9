from dal_jax.tool import main

main()
