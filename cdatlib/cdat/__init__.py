"""CDaT: masking analysis, modality confidence and dynamic probabilistic knowledge transfer (Hong, Kang, Cho, IEEE Access 2024)"""
